"""The run builder: what every run builds from its config, in one place. Training
(`training.loop.train_and_evaluate`), RL (`rl.loop.train_rl`), the experiments and
`python -m llada_jax.plan` start here.

    with claimed(config, workdir, rules.check_train, devices) as saved_info:  # checked, claimed, locked
        run = build(config, devices, tokenizer)   # mesh, rules, model, optimizer, state shardings
        ckpt = checkpointer(config, workdir)
        train_it, make_eval_iter = data(config, tokenizer, workdir)

`build` applies `config.mesh.rules` to the state's shardings, and every run enters
`run.context()` (the mesh and those rules) around its steps.
"""

from __future__ import annotations

import contextlib
import os
from typing import NamedTuple

import jax
import optax

from llada_jax import objectives
from llada_jax.checkpoint import manager
from llada_jax.config import rules
from llada_jax.checkpoint import workdir as workdir_lib
from llada_jax.model import LLaDA, LLaDAConfig, from_config
from llada_jax.parallel import sharding
from llada_jax.training import inputs, optimizer, state
from llada_jax.training.step import Static


class Run(NamedTuple):
    """What a run compiles and shards from its config (no arrays are allocated)."""

    mesh: jax.sharding.Mesh
    rules: tuple  # logical-axis rules: LOGICAL_RULES with config.mesh.rules applied
    model: LLaDA
    tx: optax.GradientTransformation
    schedule: object  # step -> learning rate
    abstract: dict  # the state's shapes (training.state)
    shardings: dict  # and its NamedShardings

    def context(self):
        """The mesh and the logical-axis rules, for everything that traces the model."""
        stack = contextlib.ExitStack()
        stack.enter_context(jax.set_mesh(self.mesh))
        stack.enter_context(sharding.logical_rules_context(self.rules))
        return stack

    def init_state(self, seed: int, params=None, frozen=None):
        """A fresh state in `shardings` (training.state.init_state)."""
        return state.init_state(self.model, self.tx, self.mesh, seed, self.shardings, params=params,
                                frozen=frozen, rules=self.rules)


def build(config, devices=None, tokenizer=None, *, model_config: LLaDAConfig | None = None) -> Run:
    """The mesh over `devices` (default: all), its rules, the model (shape from
    config.model and the tokenizer's special ids, or `model_config`), the optimizer of
    config.optim over config.train.steps, and the state's abstract shapes and shardings."""
    devices = list(jax.devices() if devices is None else devices)
    mesh = sharding.make_mesh(config.mesh, devices)
    axis_rules = sharding.rules_of(config.mesh)
    rules.check_tokenizer(config, tokenizer)
    model = LLaDA(model_config or from_config.model_config(config, tokenizer))
    tx, schedule = optimizer.make_optimizer(config.optim, config.train.steps)
    abstract, shardings = state.state_shardings(model, tx, mesh, rules=axis_rules)
    return Run(mesh, axis_rules, model, tx, schedule, abstract, shardings)


def step_settings(config, run: Run) -> tuple[Static, dict]:
    """(Static, batch spec {field: ndim}) of the training step of `config.data.kind`: what
    the training loop and `plan` compile."""
    d = config.data
    objective = objectives.get(d.kind)
    st = Static(run.model, run.tx, d.kind, run.model.config.mask_token_id, d.eps,
                d.random_length_prob if objective.random_length else 0.0, config.optim.grad_accum, run.schedule,
                run.rules)
    return st, {field: 2 for field in objective.fields}


def checkpointer(config, workdir: str) -> manager.Checkpointer:
    """The run's Orbax checkpointer under WORKDIR/checkpoints, by config.checkpoint."""
    c = config.checkpoint
    return manager.Checkpointer(manager.checkpoint_dir(workdir), every=c.every, keep=c.keep,
                                async_save=c.async_save)


def data(config, tokenizer, workdir: str):
    """(train iterator, make_eval_iterator) of this process's rows (training.inputs)."""
    return inputs.iterators(config, tokenizer, process_index=jax.process_index(), process_count=jax.process_count(),
                            cache_dir=os.path.join(workdir, "data_cache"))


@contextlib.contextmanager
def claimed(config, workdir: str, check, devices=None, *, refuse=None):
    """Check `config` (check(config, num_devices, process_count), a `llada_jax.config.rules`
    function), claim `workdir` for a training run and hold its lock for the block; yields
    its run.json (None: a new workdir). `refuse(saved_info)` may raise for a workdir of
    another run (RL refuses a plain training workdir)."""
    devices = list(jax.devices() if devices is None else devices)
    check(config, len(devices), jax.process_count())
    saved_info = workdir_lib.claim(workdir, "train")
    if refuse is not None:
        refuse(saved_info)
    os.makedirs(workdir, exist_ok=True)
    with workdir_lib.lock(workdir, "train", enabled=jax.process_index() == 0):
        yield saved_info
