"""`python -m llada_jax.train`: the command `llada_jax.commands.train`."""

from llada_jax.commands.train import main

if __name__ == "__main__":
    main()
