"""`python -m llada_jax.prepare_data --inputs=GLOBS --out=DIR --tokenizer=FILE`: see
`llada_jax.data.prepare`."""

from llada_jax.data.prepare import main

if __name__ == "__main__":
    main()
