"""`python -m llada_jax.import_hf`: the command `llada_jax.commands.import_hf`."""

from llada_jax.commands.import_hf import main

if __name__ == "__main__":
    main()
