"""`python -m llada_jax.export`: the command `llada_jax.commands.export`."""

from llada_jax.commands.export import main

if __name__ == "__main__":
    main()
