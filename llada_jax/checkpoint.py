"""Checkpoints with orbax `CheckpointManager`.

One checkpoint per saved step, three items (nothing is pickled):
- "params": the parameters (a pytree of arrays);
- "train": {"step", "opt_state", "rng"} (arrays);
- "data": the data iterator's JSON state.
Saves are asynchronous (training goes on while the arrays are written), every `every`
steps, keeping the last `keep`. Restores take abstract targets carrying the shardings
of the current mesh, so a checkpoint written on 8 devices restores onto 1 and the other
way round. A latest checkpoint that cannot be read (half-written, truncated) is skipped
with a warning and the one before it is used.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import jax
import orbax.checkpoint as ocp

log = logging.getLogger(__name__)


def abstract_like(tree, shardings):
    """ShapeDtypeStructs of `tree` (arrays or abstract) placed with `shardings`."""
    return jax.tree_util.tree_map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


def run_info(workdir: str) -> dict:
    """workdir/run.json (the model shape, the config and the tokenizer path), written by a
    training run (llada_jax.loop) and by llada_jax.import_hf."""
    path = os.path.join(workdir, "run.json")
    if not os.path.isfile(path):
        raise ValueError(f"--workdir={workdir!r}: no run.json; expected a training or import workdir")
    with open(path) as f:
        return json.load(f)


def checkpoint_dir(workdir: str) -> str:
    return os.path.join(os.path.abspath(workdir), "checkpoints")


class Checkpointer:
    """Saves and restores (params, train state, data state) under `directory`."""

    def __init__(self, directory: str, *, every: int = 1000, keep: int = 3, async_save: bool = True,
                 read_only: bool = False):
        if every < 0:
            raise ValueError(f"config.checkpoint.every={every}: expected >= 0 (0: only at the end)")
        if keep < 1:
            raise ValueError(f"config.checkpoint.keep={keep}: expected >= 1")
        self.every = every
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, save_interval_steps=max(1, every), create=not read_only,
            enable_async_checkpointing=async_save, read_only=read_only, cleanup_tmp_directories=not read_only)
        self.manager = ocp.CheckpointManager(directory, options=options,
                                             item_names=("params", "train", "data"))

    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: dict, data_state: Any, *, force: bool = False) -> bool:
        """Start an asynchronous save if `step` is due (or `force`); returns whether it saved."""
        if not force and (self.every == 0 or step % self.every):
            return False
        if step in self.manager.all_steps():
            return False
        args = ocp.args.Composite(
            params=ocp.args.StandardSave(state["params"]),
            train=ocp.args.StandardSave({k: state[k] for k in ("step", "opt_state", "rng")}),
            data=ocp.args.JsonSave(data_state if data_state is not None else {}))
        return bool(self.manager.save(step, args=args, force=True))

    def _restore_step(self, step, abstract_state, with_train):
        items = dict(params=ocp.args.StandardRestore(abstract_state["params"]))
        if with_train:
            items["train"] = ocp.args.StandardRestore({k: abstract_state[k] for k in ("step", "opt_state", "rng")})
            items["data"] = ocp.args.JsonRestore()
        return self.manager.restore(step, args=ocp.args.Composite(**items))

    def restore(self, abstract_state: dict, *, params_only: bool = False):
        """Restore the latest readable checkpoint onto the shardings in `abstract_state`.

        Returns (step, state, data_state), or None when there is no checkpoint. With
        `params_only`, state holds only "params" (and data_state is None).
        """
        steps = sorted(self.manager.all_steps(), reverse=True)
        for i, step in enumerate(steps):
            try:
                out = self._restore_step(step, abstract_state, not params_only)
            except Exception as e:  # noqa: BLE001 - any unreadable checkpoint is skipped
                older = f"trying step {steps[i + 1]}" if i + 1 < len(steps) else "no older checkpoint left"
                log.warning("checkpoint at step %d in %s is unreadable (%s: %s); skipping it, %s",
                            step, self.manager.directory, type(e).__name__, str(e)[:200], older)
                continue
            if params_only:
                return step, {"params": out["params"]}, None
            state = {"params": out["params"], **out["train"]}
            data_state = out["data"] if out["data"] else None
            return step, state, data_state
        return None

    def wait(self):
        self.manager.wait_until_finished()

    def close(self):
        self.manager.wait_until_finished()
        self.manager.close()


def restore_params(path: str, abstract_params):
    """Params of the latest readable checkpoint under `path` (a workdir or its
    checkpoints/ directory), placed as `abstract_params` says. Returns (step, params)."""
    directory = path if os.path.basename(os.path.normpath(path)) == "checkpoints" else checkpoint_dir(path)
    if not os.path.isdir(directory):
        raise ValueError(f"restore_params: {path!r} holds no checkpoints/ directory; expected a training workdir")
    ckpt = Checkpointer(directory, read_only=True, async_save=False)
    try:
        out = ckpt.restore({"params": abstract_params}, params_only=True)
    finally:
        ckpt.close()
    if out is None:
        raise ValueError(f"restore_params: no readable checkpoint in {directory!r}")
    return out[0], out[1]["params"]
