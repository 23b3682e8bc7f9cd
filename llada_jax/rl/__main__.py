"""`python -m llada_jax.rl`: the command `llada_jax.commands.rl`."""

from llada_jax.commands.rl import main

if __name__ == "__main__":
    main()
