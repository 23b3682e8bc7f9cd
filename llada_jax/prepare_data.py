"""`python -m llada_jax.prepare_data`: the command `llada_jax.commands.prepare_data`."""

from llada_jax.commands.prepare_data import main

if __name__ == "__main__":
    main()
