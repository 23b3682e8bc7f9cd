"""`python -m llada_jax.import_hf --src=HF_DIR --workdir=DIR`: see `llada_jax.interop.import_hf`."""

from llada_jax.interop.import_hf import main

if __name__ == "__main__":
    main()
