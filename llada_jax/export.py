"""`python -m llada_jax.export --workdir=DIR [--step=N] --out=HF_DIR [--peft --base_model=BASE_HF_DIR]`:
see `llada_jax.interop.export`."""

from llada_jax.interop.export import main

if __name__ == "__main__":
    main()
