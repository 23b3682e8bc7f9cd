"""Evaluation with lm-evaluation-harness (`harness`: the `llada_jax` model); the command
line is `python -m llada_jax.evaluation` (this package's __main__)."""
