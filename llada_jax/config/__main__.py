"""`python -m llada_jax.config [configs/x.py]`: every config field, its value and meaning."""

from llada_jax.config.schema import main

main()
