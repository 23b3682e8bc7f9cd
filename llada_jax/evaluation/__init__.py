"""Evaluation with lm-evaluation-harness (`harness`: the `llada_jax` model); the command
line is `python -m llada_jax.evaluation` (this package's __main__) or `llada-lm-eval`."""


def main(argv=None):
    """lm-eval's command line with `llada_jax` registered (the `llada-lm-eval` console
    script); lm-eval is imported here, not when the package is."""
    from llada_jax.evaluation.harness import main as run

    return run(argv)
