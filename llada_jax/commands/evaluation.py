"""lm-eval's command line with the `llada_jax` model registered (`evaluation.harness`):

    llada-eval --model llada_jax --model_args workdir=DIR --tasks TASKS ...
    python -m llada_jax.evaluation ...   (the same command)

Its flags are lm-eval's own (`lm_eval --help`), parsed by lm-eval's argparse parser:
this command only registers the model, so it does not use the flag library's parser,
only its `error: ...` line for a user's mistake."""

from __future__ import annotations

import sys

from llada_jax.commands import flags as flag_lib
from llada_jax.commands import startup


def main(argv=None):
    from lm_eval.__main__ import cli_evaluate

    from llada_jax.evaluation import harness  # noqa: F401  (registers the `llada_jax` model)

    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    startup.start()
    with flag_lib.user_errors():
        cli_evaluate()


if __name__ == "__main__":
    main()
