"""The train step: the objective's noise (for pretrain / SFT: sample t, mask), forward,
its loss, gradients, the optimizer update; its settings (`Static`) and compiled wrappers.

Pure functions over the explicit state dict of `llada_jax.training.train_state`; one jitted step
with in/out shardings on the (data, fsdp, tensor) mesh. The jitted step and eval are
module-level functions with their settings (`Static`) as static arguments, so a second run
in one process with equal settings reuses JAX's compiled program (JAX keys its compilations
on the function, the static arguments and the shardings), with no cache of ours. The model
computes in `config.model.dtype` (bf16 on accelerators) from the fp32 master weights.
With LoRA the gradients are taken for the adapters ("params") alone; the base ("frozen")
passes through the step untouched (donated and aliased: bitwise unchanged, no copy).
The optimizer and schedules are in `llada_jax.training.optimizer`; the loop, evaluation and
the command line in `llada_jax.training.loop`, which `python -m llada_jax.train` runs.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from llada_jax import objectives
from llada_jax.objectives import diffusion
from llada_jax.model.adapters import lora
from llada_jax.model import alignment, moe
from llada_jax.parallel import sharding
from llada_jax.training import optimizer, train_state


class Static(NamedTuple):
    """Hashable settings of one compiled step."""

    model: nn.Module
    tx: optax.GradientTransformation
    kind: str  # the objective's name (llada_jax.objectives.OBJECTIVES)
    mask_id: int
    eps: float
    random_length_prob: float
    grad_accum: int
    schedule: object = None  # step -> learning rate, reported in the metrics
    rules: tuple | None = None  # logical-axis rules (sharding.rules_of(config.mesh)); None: the default
    block_size: int = 0  # block-diffusion kinds: the block size (the model's config.block_size)
    block_warmup: tuple = ()  # ((block_size, until_step), ...): smaller blocks first (conversion)


def objective_of(st: Static, block_size: int | None = None):
    """The registered objective of `st.kind`; a block-diffusion one with its block size."""
    objective = objectives.get(st.kind)
    if objective.blocks:
        objective = dataclasses.replace(objective, block_size=block_size or st.block_size)
    return objective


def _length_mask(rng, batch_shape, prob):
    """1% (prob) of steps: a random length in [1, L]; positions past it are padding.
    The length is data inside the one compiled step: no compile per length."""
    b, l = batch_shape
    use_rng, len_rng = jax.random.split(rng)
    length = jnp.where(jax.random.uniform(use_rng) < prob, jax.random.randint(len_rng, (), 1, l + 1), l)
    return jnp.broadcast_to(jnp.arange(l) < length, (b, l)), length


# Float32 (B, L, V) logits up to this size are computed whole: chunking them under
# jax.checkpoint recomputes the head's forward in the backward pass (benchmarks/train.py's
# shapes, CPU: 4 head matmuls instead of 3, ~5% of the step), and the whole logits with
# their softmax and gradient then take at most 3 x this.
WHOLE_LOGITS_BYTES = 64 << 20


def head_chunk(shape_BxL, vocab: int) -> int:
    """`diffusion.ChunkedLogits.chunk` for a batch of this shape: 0 (whole) when the
    float32 logits fit WHOLE_LOGITS_BYTES, else 128 positions at a time."""
    return 0 if shape_BxL[0] * shape_BxL[1] * vocab * 4 <= WHOLE_LOGITS_BYTES else 128


def loss_fn(params, batch, noise, valid, st: Static, frozen=None, dropout_rng=None):
    """(loss, metrics) of one (micro-)batch given its noise; `valid`: (B, L) or None.
    LoRA: `params` are the adapters, `frozen` the base; `dropout_rng` turns on their dropout."""
    variables = {"params": params if frozen is None else lora.combine(params, frozen)}
    rngs = {} if dropout_rng is None else {"dropout": dropout_rng}
    sown = []  # MoE: the router's aux losses of each forward

    def forward(ids_BxL, valid_BxL=None, *, next_token=False, positions=None, pattern=None):
        # `valid` is right padding (a length per row): passed as lengths, which every attention
        # kernel takes; the head is applied inside the loss, chunk by chunk where its logits
        # would be large (`head_chunk`).
        lengths = None if valid_BxL is None else jnp.sum(valid_BxL, axis=1, dtype=jnp.int32)
        kw = {"mutable": [moe.MOE_LOSSES]} if st.model.config.moe.enabled else {}
        out = st.model.apply(variables, ids_BxL, kv_lengths=lengths, positions=positions,
                             attention_pattern=pattern, return_hidden=True, rngs=rngs, **kw)
        if kw:
            out, mutables = out
            sown.append(moe.collect_losses(mutables))
        hidden, head = out
        if next_token:
            hidden = alignment.next_token_view(hidden, st.model.config.logit_alignment)
        return diffusion.ChunkedLogits(hidden, head, head_chunk(hidden.shape[:2], head.shape[-1]))

    loss, m = objective_of(st).loss(forward, batch, noise, valid)
    if sown:
        loss, m = moe.add_losses(loss, m, sown, st.model.config.moe)
    m["correct"] = m["masked_accuracy"] * m["num_masked"]
    return loss, m


def train_step(state, batch, st: Static):
    """One optimizer step. The noise is drawn for the whole batch, then the gradient is
    averaged over `grad_accum` micro-batches (the same result as one big batch). With a
    block warm-up, one branch per block size (`lax.switch` on the step): one program."""
    if st.block_warmup:
        sizes = [size for size, _ in st.block_warmup] + [st.block_size]
        stage = jnp.sum(state["step"] >= jnp.asarray([until for _, until in st.block_warmup]))
        branches = [functools.partial(train_step, st=st._replace(block_size=size, block_warmup=()))
                    for size in sizes]
        return jax.lax.switch(stage, branches, state, batch)
    rng, step_rng = jax.random.split(state["rng"])
    len_rng, noise_rng = jax.random.split(step_rng)
    ids = batch["input_ids"]
    valid, length = None, jnp.int32(ids.shape[1])
    objective = objective_of(st)
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
            spec = jax.sharding.PartitionSpec(None, sharding.batch_axes(jax.sharding.get_abstract_mesh()),
                                              *([None] * (x.ndim - 2)))
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
    new_params, opt_state, grad_norm = optimizer.apply_gradients(st.tx, params, state["opt_state"], grads)
    metrics = {"loss": loss, "masked_accuracy": m["correct"] / jnp.maximum(m["num_masked"], 1),
               "grad_norm": grad_norm, "num_masked": m["num_masked"], "seq_len": length,
               "lr": st.schedule(state["step"]) if st.schedule is not None else jnp.float32(0)}
    if "masked_prompt_tokens" in m:
        metrics["masked_prompt_tokens"] = m["masked_prompt_tokens"]
    for k in moe.METRICS:
        if k in m:  # summed over micro-batches
            metrics[k] = m[k] / st.grad_accum
    metrics["state_finite"] = train_state.update_finite(new_params, grad_norm)  # the loop never saves a NaN state
    new_state = {"step": state["step"] + 1, "params": new_params, "opt_state": opt_state, "rng": rng}
    if frozen is not None:
        new_state["frozen"] = frozen
    return new_state, metrics


def eval_loss(params, batch, rng, st: Static):
    """Loss of one held-out batch at a fixed rng (no random lengths)."""
    noise = objective_of(st).noise(batch, rng, None, mask_id=st.mask_id, eps=st.eps)
    return loss_fn(params, batch, noise, None, st)[0]


def compile_step(st: Static, mesh, shardings, batch_spec: dict):
    """The jitted train step with explicit in/out shardings (the state is donated).
    batch_spec: name -> ndim of the batch arrays. `run.lower(state, batch)` lowers it
    ahead of time (`python -m llada_jax.plan`, benchmarks/attention.py)."""
    batch_sh = {k: sharding.batch_sharding(mesh, nd) for k, nd in batch_spec.items()}
    fn = jax.jit(train_step, static_argnums=2, in_shardings=(shardings, batch_sh),
                 out_shardings=(shardings, sharding.replicated(mesh)), donate_argnums=0)

    return _on_mesh(fn, st, mesh)


def compile_eval(st: Static, mesh, param_shardings, batch_spec: dict):
    """The jitted held-out loss (`eval_loss`): (params, batch, rng) -> loss, replicated."""
    batch_sh = {k: sharding.batch_sharding(mesh, nd) for k, nd in batch_spec.items()}
    fn = jax.jit(eval_loss, static_argnums=3, in_shardings=(param_shardings, batch_sh, sharding.replicated(mesh)),
                 out_shardings=sharding.replicated(mesh))
    return _on_mesh(fn, st, mesh)


def _on_mesh(fn, st: Static, mesh):
    """fn(*args, st) run, and lowered (`.lower(*args)`, what `plan` compiles),
    on `mesh` with the run's logical-axis rules."""
    def run(*args):
        with jax.set_mesh(mesh), sharding.logical_rules_context(st.rules):
            return fn(*args, st)

    def lower(*args):
        with jax.set_mesh(mesh), sharding.logical_rules_context(st.rules):
            return fn.lower(*args, st)

    run.lower = lower
    return run


def compile_ahead(pool, fn, *abstract_args):
    """`fn` (compile_step's or compile_eval's) with its program compiled by `pool` (an
    executor) from `abstract_args` (ShapeDtypeStructs with shardings) while the caller goes
    on: the first call waits for it. Arguments of another type (a TypeError of the compiled
    program, raised before it runs) go through `fn`, which compiles for them."""
    future = pool.submit(lambda: fn.lower(*abstract_args).compile())

    def run(*args):
        try:
            return future.result()(*args)
        except TypeError:
            return fn(*args)

    run.lower = fn.lower
    return run
