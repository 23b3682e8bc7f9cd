"""Train or resume (`training.loop.train_and_evaluate`):

    llada-train --config=FILE --workdir=DIR [--config.x.y=v ...]
    python -m llada_jax.train ...   (the same command)

A user's mistake exits 1 with one `error: ...` line; a run stopped by SIGTERM/SIGINT
(after saving a checkpoint) exits 75: rerun the same command to resume."""

from __future__ import annotations

from llada_jax.commands import flags as flag_lib
from llada_jax.commands import startup


def define(fv):
    from absl import flags

    flags.DEFINE_string("workdir", None, "output directory; resumes from its latest checkpoint", flag_values=fv)
    return ("workdir",)


def main(argv=None, *, config_help="experiment config file (configs/*.py)", train=None):
    """`train(config, workdir) -> (state, last metrics)`: the run (default: train_and_evaluate)."""
    with flag_lib.user_errors():
        fv = flag_lib.parse(argv, define, doc=__doc__, config=True, config_help=config_help)
    from llada_jax.training import loop

    startup.start(distributed=True)
    with flag_lib.user_errors(loop.NonFiniteLossError):
        _, last = (train or loop.train_and_evaluate)(fv.config, fv.workdir)
    raise SystemExit(loop.exit_status(last))


if __name__ == "__main__":
    main()
