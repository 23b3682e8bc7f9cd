"""`python -m llada_jax.evaluation ...`: lm-eval's command line with `llada_jax` registered."""

from llada_jax.evaluation.harness import main

if __name__ == "__main__":
    main()
