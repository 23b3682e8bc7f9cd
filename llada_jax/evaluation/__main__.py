"""`python -m llada_jax.evaluation`: the command `llada_jax.commands.evaluation`."""

from llada_jax.commands.evaluation import main

if __name__ == "__main__":
    main()
