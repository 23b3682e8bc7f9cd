"""What every command does first (`start`), in one place."""

from __future__ import annotations


def start(*, distributed: bool = False):
    """Quiet absl's INFO logs (orbax logs every save at INFO) and, for the commands that
    run on many hosts (train, rl), join a multi-process run the environment describes
    (`parallel.distributed.init_distributed`)."""
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.WARNING)
    if distributed:
        from llada_jax.parallel.distributed import init_distributed

        init_distributed()
