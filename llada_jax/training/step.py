"""The train step: the objective's noise (for pretrain / SFT: sample t, mask), forward,
its loss, gradients, the optimizer update (`training.optimizer`).

A pure function over the state dict of `training.state`; one jitted step with in/out
shardings on the (data, fsdp, tensor) mesh. The jitted step and eval are module-level
functions with their settings (`Static`) as static arguments, so a second run in one
process with equal settings reuses JAX's compiled program (JAX keys its compilations on
the function, the static arguments and the shardings), with no cache of ours. The model
computes in `config.model.dtype` (bf16 on accelerators). With LoRA the frozen base is
donated and aliased through the step: bitwise unchanged, no copy.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from llada_jax import objectives
from llada_jax.model import LLaDA
from llada_jax.model.adapters import lora
from llada_jax.objectives import diffusion
from llada_jax.parallel import sharding
from llada_jax.training.optimizer import apply_gradients
# Moved to training.optimizer / training.state; re-exported while other branches import them from here.
from llada_jax.training.optimizer import SCHEDULES, make_optimizer, make_schedule  # noqa: F401
from llada_jax.training.state import full_params, init_state, state_shardings  # noqa: F401

class Static(NamedTuple):
    """Hashable settings of one compiled step."""

    model: LLaDA
    tx: optax.GradientTransformation
    kind: str  # the objective's name (llada_jax.objectives.OBJECTIVES)
    mask_id: int
    eps: float
    random_length_prob: float
    grad_accum: int
    schedule: object = None  # step -> learning rate, reported in the metrics
    rules: tuple | None = None  # logical-axis rules (sharding.rules_of(config.mesh)); None: the default


def _length_mask(rng, batch_shape, prob):
    """1% (prob) of steps: a random length in [1, L]; positions past it are padding.
    The length is data inside the one compiled step: no compile per length."""
    b, l = batch_shape
    use_rng, len_rng = jax.random.split(rng)
    length = jnp.where(jax.random.uniform(use_rng) < prob, jax.random.randint(len_rng, (), 1, l + 1), l)
    return jnp.broadcast_to(jnp.arange(l) < length, (b, l)), length


def loss_fn(params, batch, noise, valid, st: Static, frozen=None, dropout_rng=None):
    """(loss, metrics) of one (micro-)batch given its noise; `valid`: (B, L) or None.
    LoRA: `params` are the adapters, `frozen` the base; `dropout_rng` turns on their dropout."""
    variables = {"params": params if frozen is None else lora.combine(params, frozen)}
    rngs = {} if dropout_rng is None else {"dropout": dropout_rng}

    def forward(ids_BxL, valid_BxL=None):
        # `valid` is right padding (a length per row): passed as lengths, which every attention
        # kernel takes; the head is applied chunk by chunk inside the loss.
        lengths = None if valid_BxL is None else jnp.sum(valid_BxL, axis=1, dtype=jnp.int32)
        return diffusion.ChunkedLogits(*st.model.apply(variables, ids_BxL, kv_lengths=lengths,
                                                       return_hidden=True, rngs=rngs))

    loss, m = objectives.get(st.kind).loss(forward, batch, noise, valid)
    m["correct"] = m["masked_accuracy"] * m["num_masked"]
    return loss, m


def train_step(state, batch, st: Static):
    """One optimizer step. The noise is drawn for the whole batch, then the gradient is
    averaged over `grad_accum` micro-batches (the same result as one big batch)."""
    rng, step_rng = jax.random.split(state["rng"])
    len_rng, noise_rng = jax.random.split(step_rng)
    ids = batch["input_ids"]
    valid, length = None, jnp.int32(ids.shape[1])
    objective = objectives.get(st.kind)
    if objective.random_length and st.random_length_prob > 0:
        valid, length = _length_mask(len_rng, ids.shape, st.random_length_prob)
    noise = objective.noise(batch, noise_rng, valid, mask_id=st.mask_id, eps=st.eps)
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    params, frozen = state["params"], state.get("frozen")
    drop = jax.random.fold_in(step_rng, 1) if st.model.config.lora.dropout > 0 else None
    if st.grad_accum == 1:
        (loss, m), grads = grad_fn(params, batch, noise, valid, st, frozen, drop)
    else:
        a = st.grad_accum

        def split(x):
            x = x.reshape((a, x.shape[0] // a) + x.shape[1:])
            spec = jax.sharding.PartitionSpec(None, sharding.BATCH_AXES, *([None] * (x.ndim - 2)))
            return jax.lax.with_sharding_constraint(x, spec)

        micro = jax.tree_util.tree_map(split, (batch, noise, valid))

        def body(acc, xs):
            (mb, mn, mv), i = xs
            mdrop = None if drop is None else jax.random.fold_in(drop, i)
            (l_, m_), g = grad_fn(params, mb, mn, mv, st, frozen, mdrop)
            return jax.tree_util.tree_map(jnp.add, acc, g), (l_, m_)

        zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
        grads, (losses, ms) = jax.lax.scan(body, zeros, (micro, jnp.arange(a)))
        grads = jax.tree_util.tree_map(lambda g: g / a, grads)
        loss = jnp.mean(losses)
        m = jax.tree_util.tree_map(jnp.sum, ms)
    new_params, opt_state, grad_norm = apply_gradients(st.tx, params, state["opt_state"], grads)
    metrics = {"loss": loss, "masked_accuracy": m["correct"] / jnp.maximum(m["num_masked"], 1),
               "grad_norm": grad_norm, "num_masked": m["num_masked"], "seq_len": length,
               "lr": st.schedule(state["step"]) if st.schedule is not None else jnp.float32(0)}
    if "masked_prompt_tokens" in m:
        metrics["masked_prompt_tokens"] = m["masked_prompt_tokens"]
    metrics["state_finite"] = all_finite((new_params, opt_state))  # the loop never saves a NaN state
    new_state = {"step": state["step"] + 1, "params": new_params, "opt_state": opt_state, "rng": rng}
    if frozen is not None:
        new_state["frozen"] = frozen
    return new_state, metrics


def all_finite(tree):
    """True when every floating-point leaf of `tree` is finite (one fused reduction)."""
    leaves = [x for x in jax.tree_util.tree_leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)]
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves])) if leaves else jnp.bool_(True)


def eval_loss(params, batch, rng, st: Static):
    """Loss of one held-out batch at a fixed rng (no random lengths)."""
    noise = objectives.get(st.kind).noise(batch, rng, None, mask_id=st.mask_id, eps=st.eps)
    return loss_fn(params, batch, noise, None, st)[0]


def compile_step(st: Static, mesh, shardings, batch_spec: dict):
    """The jitted train step with explicit in/out shardings (the state is donated).
    batch_spec: name -> ndim of the batch arrays. `run.lower(state, batch)` lowers it
    ahead of time (`python -m llada_jax.plan`, benchmarks/attention.py)."""
    batch_sh = {k: sharding.batch_sharding(mesh, nd) for k, nd in batch_spec.items()}
    fn = jax.jit(train_step, static_argnums=2, in_shardings=(shardings, batch_sh),
                 out_shardings=(shardings, sharding.replicated(mesh)), donate_argnums=0)

    def run(state, batch):
        with jax.set_mesh(mesh), sharding.logical_rules_context(st.rules):
            return fn(state, batch, st)

    run.lower = lambda state, batch: fn.lower(state, batch, st)
    return run


def compile_eval(st: Static, mesh, param_shardings, batch_spec: dict):
    batch_sh = {k: sharding.batch_sharding(mesh, nd) for k, nd in batch_spec.items()}
    fn = jax.jit(eval_loss, static_argnums=3, in_shardings=(param_shardings, batch_sh, sharding.replicated(mesh)),
                 out_shardings=sharding.replicated(mesh))

    def run(params, batch, rng):
        with jax.set_mesh(mesh), sharding.logical_rules_context(st.rules):
            return fn(params, batch, rng, st)

    return run
