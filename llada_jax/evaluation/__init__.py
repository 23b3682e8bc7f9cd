"""Evaluation with lm-evaluation-harness (`harness`: the `llada_jax` model); the command
line is `llada_jax.commands.evaluation` (`llada-eval`, `python -m llada_jax.evaluation`)."""


def main(argv=None):
    """The `llada-lm-eval` console script of installs made before `llada_jax.commands`."""
    from llada_jax.commands.evaluation import main as run

    return run(argv)
