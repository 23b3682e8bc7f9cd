"""Checkpoints and workdirs: orbax save/restore (`manager`), the workdir's ownership,
lock and run.json (`workdir`), and the one workdir reader, with a LoRA run's reference to
its base (`load`)."""

from llada_jax.checkpoint.manager import (CheckpointMismatchError, Checkpointer, abstract_like, checkpoint_dir,
                                          restore_params, run_info)

__all__ = ["CheckpointMismatchError", "Checkpointer", "abstract_like", "checkpoint_dir", "restore_params",
           "run_info"]
