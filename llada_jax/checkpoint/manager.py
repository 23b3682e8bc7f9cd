"""Checkpoints with orbax `CheckpointManager`.

One checkpoint per saved step, three items (nothing is pickled):
- "params": the parameters (a pytree of arrays);
- "train": {"step", "opt_state", "rng"} (arrays);
- "data": the data iterator's JSON state.
Saves are asynchronous (training goes on while the arrays are written), every `every`
steps, keeping the last `keep`. Restores take abstract targets carrying the shardings
of the current mesh, so a checkpoint written on 8 devices restores onto 1 and the other
way round.

Restore tells two failures apart. A checkpoint whose metadata reads but does not match
the abstract state (other shapes, dtypes or tree: the config changed) raises
`CheckpointMismatchError` naming the leaves, before anything is written. A checkpoint
that cannot be read (half-written, truncated files) is moved aside to
`quarantine/<step>.<time>` next to checkpoints/ (never deleted, so the run saves that
step again) and the one before it is used; read-only restores only skip it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from llada_jax.checkpoint import workdir as workdir_lib

log = logging.getLogger(__name__)


class CheckpointMismatchError(ValueError):
    """A readable checkpoint whose arrays do not match the state this run builds."""

    def __init__(self, step: int, directory: str, details: list[str]):
        self.step, self.directory, self.details = step, directory, details
        super().__init__(f"checkpoint step {step} in {directory} does not match the state of this config "
                         f"({'; '.join(details)})")


def _leaf_name(path) -> str:
    """The dotted name orbax gives a leaf (dict keys, sequence indices, field names)."""
    parts = []
    for k in path:
        for attr in ("key", "idx", "name"):
            if hasattr(k, attr):
                parts.append(str(getattr(k, attr)))
                break
        else:
            parts.append(str(k))
    return ".".join(parts)


def _flat_spec(tree, prefix: str) -> dict:
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        out[".".join(filter(None, [prefix, _leaf_name(path)]))] = (tuple(leaf.shape), np.dtype(leaf.dtype))
    return out


def _mismatches(saved: dict, want: dict, limit: int = 3, dtypes: bool = True) -> list[str]:
    """Human-readable differences between two {name: (shape, dtype)} maps (the first
    `limit`, then a count of the rest); with `dtypes=False` only shapes must agree."""
    out = [f"{n} {want[n][0]} missing from the checkpoint" for n in sorted(set(want) - set(saved))]
    out += [f"{n} {saved[n][0]} in the checkpoint is not in this state" for n in sorted(set(saved) - set(want))]
    out += [f"{n}: checkpoint {saved[n][0]} {saved[n][1]}, this config {want[n][0]} {want[n][1]}"
            for n in sorted(set(saved) & set(want)) if saved[n][: 2 if dtypes else 1] != want[n][: 2 if dtypes else 1]]
    return out[:limit] + ([f"{len(out) - limit} more"] if len(out) > limit else [])


def abstract_like(tree, shardings):
    """ShapeDtypeStructs of `tree` (arrays or abstract) placed with `shardings`."""
    return jax.tree_util.tree_map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


def run_info(workdir: str) -> dict:
    """workdir/run.json (the model shape, the config and the tokenizer path), written by a
    training run (llada_jax.training.loop) and by llada_jax.import_hf; see llada_jax.checkpoint.workdir."""
    return workdir_lib.read_run_info(workdir)


def checkpoint_dir(workdir: str) -> str:
    return os.path.join(os.path.abspath(workdir), "checkpoints")


@contextlib.contextmanager
def _quiet_read_only_notice():
    """Drop orbax's "Given directory is read only" warning, which CheckpointManager logs on
    every read-only open (we asked for read-only: reading a run we did not write)."""
    absl_logger = logging.getLogger("absl")
    drop = lambda record: not str(record.msg).startswith("Given directory is read only")  # noqa: E731
    absl_logger.addFilter(drop)
    try:
        yield
    finally:
        absl_logger.removeFilter(drop)


class _Pinned:
    """Orbax preservation policy: the steps of `workdir` pinned by LoRA runs, read at each
    decision (a LoRA run may pin while this run trains)."""

    def __init__(self, workdir: str):
        self.workdir = workdir

    def should_preserve(self, checkpoints, *, context):
        pinned = workdir_lib.pinned_steps(self.workdir)
        return [c.step in pinned for c in checkpoints]


class Checkpointer:
    """Saves and restores (params, train state, data state) under `directory`."""

    def __init__(self, directory: str, *, every: int = 1000, keep: int = 3, async_save: bool = True,
                 read_only: bool = False):
        if every < 0:
            raise ValueError(f"Checkpointer: every={every}: expected >= 0 (0: only at the end)")
        if keep < 1:
            raise ValueError(f"Checkpointer: keep={keep}: expected >= 1")
        self.every, self.read_only, self.directory = every, read_only, directory
        # Read-only: no retention nor save interval (orbax would reset them with a warning each).
        # Retention keeps the last `keep` and every step a LoRA run pinned (workdir.pin).
        keep_policy = None if read_only else ocp.checkpoint_managers.AnyPreservationPolicy(
            [ocp.checkpoint_managers.LatestN(keep), _Pinned(os.path.dirname(os.path.abspath(directory)))])
        options = ocp.CheckpointManagerOptions(
            preservation_policy=keep_policy, create=not read_only,  # `save` decides which steps are due
            **({"save_interval_steps": 0} if read_only else {}),
            enable_async_checkpointing=async_save, read_only=read_only, cleanup_tmp_directories=not read_only)
        handlers = {"params": ocp.StandardCheckpointHandler(), "train": ocp.StandardCheckpointHandler(),
                    "data": ocp.JsonCheckpointHandler()}  # known up front: metadata reads need them
        with _quiet_read_only_notice():
            self.manager = ocp.CheckpointManager(directory, options=options, item_handlers=handlers)

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

    def _items(self, abstract_state, with_train):
        items = {"params": abstract_state["params"]}
        if with_train:
            items["train"] = {k: abstract_state[k] for k in ("step", "opt_state", "rng")}
        return items

    def _check_metadata(self, step, items, dtypes=True):
        """Raise CheckpointMismatchError when the saved arrays differ from `items` (in shape,
        and in dtype when `dtypes`); any other exception means the checkpoint cannot be read."""
        metadata = self.manager.item_metadata(step)
        saved, want = {}, {}
        for name, tree in items.items():
            md = metadata[name] if name in metadata.keys() else None
            if md is None or getattr(md, "tree", None) is None:
                raise OSError(f"no metadata for item {name!r}")
            saved.update(_flat_spec(md.tree, name))
            want.update(_flat_spec(tree, name))
        details = _mismatches(saved, want, dtypes=dtypes)
        if details:
            raise CheckpointMismatchError(step, self.directory, details)

    def _restore_step(self, step, abstract_state, with_train):
        items = self._items(abstract_state, with_train)
        # Params alone (init_from, a LoRA base, sampling) may be cast on read (an fp32 checkpoint
        # into a bf16 model); a resumed training state must match exactly.
        self._check_metadata(step, items, dtypes=with_train)
        args = {k: ocp.args.StandardRestore(v) for k, v in items.items()}
        if with_train:
            args["data"] = ocp.args.JsonRestore()
        return self.manager.restore(step, args=ocp.args.Composite(**args))

    def quarantine(self, step: int) -> str | None:
        """Move an unreadable step aside to quarantine/<step>.<time> (process 0; never
        deleted) so the run saves that step again. Returns the new path."""
        dest = None
        if jax.process_index() == 0:
            root = os.path.join(os.path.dirname(os.path.abspath(self.directory)), "quarantine")
            os.makedirs(root, exist_ok=True)
            dest = os.path.join(root, f"{step}.{time.strftime('%Y%m%dT%H%M%S')}.{os.getpid()}")
            shutil.move(os.path.join(self.directory, str(step)), dest)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(f"quarantine {step}")
        self.manager.reload()
        return dest

    def restore(self, abstract_state: dict, *, params_only: bool = False):
        """Restore the latest readable checkpoint onto the shardings in `abstract_state`.

        Returns (step, state, data_state), or None when there is no checkpoint. With
        `params_only`, state holds only "params" (and data_state is None). A readable
        checkpoint that does not match raises CheckpointMismatchError; an unreadable one
        is quarantined (read-only: skipped) and the next older one tried.
        """
        steps = sorted(self.manager.all_steps(), reverse=True)
        for i, step in enumerate(steps):
            try:
                out = self._restore_step(step, abstract_state, not params_only)
            except CheckpointMismatchError:
                raise
            except Exception as e:  # noqa: BLE001 - any other failure: the files cannot be read
                if isinstance(e, MemoryError) or "RESOURCE_EXHAUSTED" in str(e):
                    raise  # out of memory says nothing about the files: keep them where they are
                older = f"trying step {steps[i + 1]}" if i + 1 < len(steps) else "no older checkpoint left"
                moved = None if self.read_only else self.quarantine(step)
                log.warning("checkpoint at step %d in %s is unreadable (%s: %s); %s, %s",
                            step, self.directory, type(e).__name__, str(e)[:200],
                            f"moved it to {moved}" if moved else "skipping it", older)
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


def restore_params(path: str, abstract_params, step: int | None = None):
    """Params of checkpoint `step` (default: the latest readable) under `path` (a workdir or
    its checkpoints/ directory), placed as `abstract_params` says. Returns (step, params)."""
    directory = path if os.path.basename(os.path.normpath(path)) == "checkpoints" else checkpoint_dir(path)
    if not os.path.isdir(directory):
        raise ValueError(f"restore_params: {path!r} holds no checkpoints/ directory; expected a training workdir")
    ckpt = Checkpointer(directory, read_only=True, async_save=False)
    try:
        if step is None:
            out = ckpt.restore({"params": abstract_params}, params_only=True)
        elif step not in ckpt.all_steps():
            raise ValueError(f"step {step}: not among the saved steps {ckpt.all_steps()} of {path!r}")
        else:
            out = step, ckpt._restore_step(step, {"params": abstract_params}, False)
    finally:
        ckpt.close()
    if out is None:
        raise ValueError(f"restore_params: no readable checkpoint in {directory!r}")
    return out[0], out[1]["params"]
