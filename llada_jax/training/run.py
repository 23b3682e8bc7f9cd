"""One run's set-up, shared by training (`training.loop.train_and_evaluate`), RL
(`rl.loop.train_rl`), `python -m llada_jax.plan` and the experiments
(`experiments.experiment_run`): config -> workdir claim, resolved and
checked config, mesh, logical-axis rules (`config.mesh.rules` applied), tokenizer, model,
optimizer and schedule, abstract state and its shardings, data iterators, checkpoints.

- `open_run(config, workdir, purpose=...)`: a context manager: claim the workdir, resolve
  and check the config (`config.rules` / `config.rules_rl`) before anything expensive, hold
  the workdir's lock, and yield the built `Run`; its Checkpointer is closed on the way out.
- `build_run(config)`: the same `Run` without a workdir (no tokenizer, data or
  checkpoints): what `plan` compiles and the experiments train in memory.
- `train_static(run)`: the train step's settings and batch fields of a training run.

The purposes differ where their runs do: "train" inherits unset model fields from its
base (`training.inherit.resolve`) and copies its tokenizer into the workdir; "rl" starts
from `rl.init_from` and takes the model fields as the config (or MODEL_DEFAULTS) gives them;
its data is GRPO's synthetic task (VRPO's pairs are read by the RL loop).
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax
import optax
from jax.sharding import Mesh

from llada_jax import objectives
from llada_jax.checkpoint import manager
from llada_jax.checkpoint import workdir as workdir_lib
from llada_jax.config import rules, rules_rl, with_model_defaults
from llada_jax.model import LLaDAConfig, build, from_config
from llada_jax.parallel import sharding
from llada_jax.training import inherit, inputs, optimizer, step, train_state

PURPOSES = ("train", "rl", "plan")


class Run(NamedTuple):
    """What a run is built from its config."""

    config: Any  # the resolved config: unset model fields inherited or at their defaults
    devices: list
    mesh: Mesh
    dims: tuple  # the mesh's axis sizes
    rules: tuple  # logical-axis rules: LOGICAL_RULES with config.mesh.rules applied
    model_config: LLaDAConfig
    model: nn.Module
    tx: optax.GradientTransformation
    schedule: Callable  # step -> learning rate
    abstract: dict  # the train state's shapes (`train_state.state_shardings`)
    shardings: dict
    tokenizer: Any = None  # None: synthetic data, or a plan
    checkpointer: manager.Checkpointer | None = None
    data: tuple | None = None  # (train iterator, () -> eval iterator)
    saved_info: dict | None = None  # the workdir's run.json before this run; None: a new run


def check(config, workdir: str | None, devices, purpose: str):
    """(resolved config, the workdir's run.json or None, mesh dims): the workdir claimed
    (WorkdirError when this run must not write it) and every config rule checked, before
    anything is read, compiled or written."""
    if purpose not in PURPOSES:
        raise ValueError(f"purpose={purpose!r}: expected one of {PURPOSES}")
    n = len(devices)
    if purpose == "train":
        saved_info = workdir_lib.claim(workdir, "train")
        config = inherit.resolve(config, workdir, saved_info)  # the model fields it leaves unset
        return config, saved_info, rules.train_run(config, n, jax.process_count())
    config = with_model_defaults(config)  # nothing is inherited: unset model fields at their defaults
    if purpose == "plan":
        return config, None, rules.train_config(config, n, 1)
    dims = rules_rl.rl_config(config, n)
    saved_info = workdir_lib.claim(workdir, "train")
    if saved_info is not None and "rl" not in saved_info:
        raise workdir_lib.WorkdirError(
            f"--workdir={workdir!r} holds a training run that is not an RL run; RL writes a new --workdir "
            f"(start from that one with --config.rl.init_from={workdir})")
    return config, saved_info, dims


@contextlib.contextmanager
def open_run(config, workdir: str, *, devices=None, purpose: str = "train"):
    """Claim `workdir`, check `config`, take the workdir's lock and yield the built `Run`
    (`purpose` "train" or "rl"); the Checkpointer is closed and the lock released on exit."""
    devices = list(jax.devices() if devices is None else devices)
    config, saved_info, dims = check(config, workdir, devices, purpose)
    os.makedirs(workdir, exist_ok=True)
    with workdir_lib.lock(workdir, "train", enabled=jax.process_index() == 0):
        run = _build(config, workdir, devices, dims, purpose, saved_info)
        try:
            yield run
        finally:
            run.checkpointer.close()


def build_run(config, *, devices=None) -> Run:
    """The `Run` of `config` without a workdir (no tokenizer, data nor checkpoints): its
    config checked, mesh, rules, model, optimizer and state shardings, as `plan` compiles them."""
    devices = list(jax.devices() if devices is None else devices)
    config, _, dims = check(config, None, devices, "plan")
    return _build(config, None, devices, dims, "plan", None)


def _build(config, workdir, devices, dims, purpose, saved_info) -> Run:
    mesh = sharding.make_mesh(config.mesh, devices)
    mesh_rules = sharding.rules_of(config.mesh)
    tokenizer = None
    if purpose == "train":
        tokenizer = inherit.run_tokenizer(config, workdir, jax.process_index() == 0)
    elif purpose == "rl" and config.data.source != "synthetic":
        tokenizer = inputs.load_tokenizer(config, workdir)
    mcfg = from_config.model_config(config, tokenizer)
    model = build(mcfg)
    tx, schedule = optimizer.make_optimizer(config.optim, config.train.steps)
    abstract, shardings = train_state.state_shardings(model, tx, mesh, rules=mesh_rules)
    ckpt, data = None, None
    if workdir is not None:
        c = config.checkpoint
        ckpt = manager.Checkpointer(manager.checkpoint_dir(workdir), every=c.every, keep=c.keep,
                                    async_save=c.async_save)
    if purpose == "train":
        data = inputs.iterators(config, tokenizer, process_index=jax.process_index(),
                                process_count=jax.process_count(), cache_dir=os.path.join(workdir, "data_cache"))
    elif purpose == "rl" and config.rl.algorithm == "grpo":
        data = inputs.iterators(config, None, process_index=0, process_count=1)
    return Run(config, devices, mesh, tuple(dims), mesh_rules, mcfg, model, tx, schedule, abstract, shardings,
               tokenizer, ckpt, data, saved_info)


def abstract_batch(run: Run) -> dict:
    """The global batch of a training run as ShapeDtypeStructs: int32 token ids, bool masks
    (the data pipeline's dtypes), sharded over the batch axes."""
    d, fields = run.config.data, objectives.get(run.config.data.kind).fields
    return {k: jax.ShapeDtypeStruct((d.batch_size, d.seq_len), jax.numpy.int32 if k == "input_ids" else bool,
                                    sharding=sharding.batch_sharding(run.mesh)) for k in fields}


def train_static(run: Run) -> tuple[step.Static, dict]:
    """(the train step's settings, batch spec {field: ndim}) of a training or plan run."""
    config = run.config
    d = config.data
    objective = objectives.get(d.kind)
    block_size, warmup = rules.block_settings(config)
    st = step.Static(run.model, run.tx, d.kind, run.model_config.mask_token_id, d.eps,
                     d.random_length_prob if objective.random_length else 0.0, config.optim.grad_accum,
                     run.schedule, run.rules, block_size, warmup)
    return st, {field: 2 for field in objective.fields}
