"""The train step: the objective's noise (for pretrain / SFT: sample t, mask), forward,
its loss, gradients, AdamW.

Pure functions over an explicit state dict {"step", "params", "opt_state", "rng"}; one
jitted step with in/out shardings on the (data, fsdp, tensor) mesh. The jitted init, step
and eval are module-level functions with their settings (`Static`) as static arguments, so
a second run in one process with equal settings reuses JAX's compiled program (JAX keys
its compilations on the function, the static arguments and the shardings), with no cache
of ours. Parameters are the fp32 master weights; the model computes in
`config.model.dtype` (bf16 on accelerators).
With LoRA (`model.config.lora.rank > 0`) "params" holds only the adapters, the trainable
partition, and the state gains "frozen", the base: gradients are taken and the optimizer
(the same optax chain) keeps state for the adapters alone, and the base passes through
the step untouched (donated and aliased: bitwise unchanged, no copy). Splitting the tree
instead of masking the full one (optax.masked / multi_transform) also avoids computing
and accumulating full-size base gradients only to throw them away.
The loop, evaluation and the command line are in `llada_jax.training.loop`, which
`python -m llada_jax.train` runs.
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
from llada_jax.model import abstract_params

SCHEDULES = ("wsd", "cosine", "constant")
KINDS = objectives.training_kinds()  # the objectives a training run (a mask predictor) takes


def make_schedule(optim, total_steps: int):
    """Learning rate as a function of the step (a jnp scalar).

    wsd: linear warmup 0 -> lr over warmup_steps; lr (times drop_ratio from drop_step on,
    if drop_step >= 0); over the last decay_steps a linear decay to lr * final_lr_ratio.
    cosine: linear warmup, then cosine decay to lr * final_lr_ratio at total_steps.
    """
    lr, warm, final = optim.lr, optim.warmup_steps, optim.lr * optim.final_lr_ratio
    if optim.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(0.0, lr, max(warm, 0), max(total_steps, warm + 1), final)
    if optim.schedule == "constant":
        return lambda step: lr * jnp.minimum(1.0, (step + 1) / max(warm, 1)) if warm else jnp.full((), lr)

    decay_start = total_steps - optim.decay_steps

    def wsd(step):
        step = jnp.asarray(step, jnp.float32)
        warmup = lr * jnp.minimum(1.0, step / max(warm, 1)) if warm else lr
        level = lr if optim.drop_step < 0 else jnp.where(step >= optim.drop_step, lr * optim.drop_ratio, lr)
        at_decay = lr * (optim.drop_ratio if 0 <= optim.drop_step <= decay_start else 1.0)
        frac = jnp.clip((step - decay_start) / max(optim.decay_steps, 1), 0.0, 1.0)
        decayed = at_decay + (final - at_decay) * frac
        return jnp.where(step < warm, warmup, jnp.where(step >= decay_start, decayed, level))

    return wsd


def _decay_mask(params):
    """Weight decay on matrices only, not on the norm scales (nor MoE's fixed expert bias)."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: not any("norm" in str(k) or "ln_f" in str(k) or "expert_bias" in str(k) for k in path), params)


def make_optimizer(optim, total_steps: int):
    """(optax transformation, schedule): global-norm clipping, then AdamW."""
    return _make_optimizer(tuple(sorted(optim.items())), total_steps)


@functools.lru_cache(maxsize=32)
def _make_optimizer(optim_items, total_steps):
    """The one cache that stays, and why: an optax transformation is a tuple of closures,
    hashed and compared by identity, and it is part of `Static`, the static argument of
    the jitted init and step. Building it anew for equal settings would give a new
    `Static` each time, so every run or RL phase in one process (the test suite's many
    short runs) would trace and compile its init and step again (measured: a second equal
    tiny run in one process compiles nothing with this cache, 2 programs / 7 s on CPU
    without it). Memoising this pure constructor returns the identical transformation for
    equal (hashable) settings; it holds no state of a run."""
    optim = _Fields(dict(optim_items))
    schedule = make_schedule(optim, total_steps)
    parts = [optax.clip_by_global_norm(optim.clip_norm)] if optim.clip_norm > 0 else []
    parts.append(optax.adamw(schedule, b1=optim.b1, b2=optim.b2, eps=optim.eps,
                             weight_decay=optim.weight_decay, mask=_decay_mask))
    return optax.chain(*parts), schedule


class _Fields(dict):
    __getattr__ = dict.__getitem__


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


def block_settings(config) -> tuple[int, tuple]:
    """(block size, warm-up stages) of a run: block-diffusion kinds train the model's
    `model.block_size`, after `train.block_warmup` ("4:100,16:300": block 4 for steps
    0-99, 16 until step 299, then the model's; LLaDA 2.x / Fast-dLLM v2 conversion of
    a `train.init_from` checkpoint). ValueError for a size that does not divide the
    sequence length, a block kind without a block-causal model, or a warm-up without one."""
    d, bs = config.data, config.model.get("block_size", 0)
    blocks = objectives.get(d.kind).blocks
    if blocks and bs < 1:
        raise ValueError(f"config.data.kind={d.kind!r} trains a block-causal model: expected "
                         f"config.model.block_size >= 1, got {bs}")
    if bs and not blocks:
        raise ValueError(f"config.model.block_size={bs}: a block-causal model trains with data.kind "
                         f"'block_diffusion' or 'block_sft', not {d.kind!r}")
    text = config.train.get("block_warmup", "")
    stages = []
    for part in [p for p in text.split(",") if p.strip()]:
        try:
            size, until = (int(x) for x in part.split(":"))
        except ValueError:
            raise ValueError(f"config.train.block_warmup={text!r}: expected 'SIZE:UNTIL_STEP,...'") from None
        if stages and until <= stages[-1][1] or until < 1 or size < 1:
            raise ValueError(f"config.train.block_warmup={text!r}: expected sizes >= 1 and increasing steps")
        stages.append((size, until))
    if stages and not blocks:
        raise ValueError(f"config.train.block_warmup={text!r}: only for block-diffusion kinds, not {d.kind!r}")
    for size in [bs] + [s for s, _ in stages] if blocks else []:
        if d.seq_len % size:
            raise ValueError(f"block size {size} (config.model.block_size / train.block_warmup) must divide "
                             f"config.data.seq_len={d.seq_len}")
    return bs, tuple(stages)


def objective_of(st: Static, block_size: int | None = None):
    """The registered objective of `st.kind`; a block-diffusion one with its block size."""
    objective = objectives.get(st.kind)
    if objective.blocks:
        objective = dataclasses.replace(objective, block_size=block_size or st.block_size)
    return objective


def _opt_shardings(abstract_opt, param_shardings, mesh):
    """Optimizer-state leaves that mirror a parameter (same path suffix, same shape)
    take its sharding; the rest (counts) are replicated."""
    by_path = {}
    for path, s in jax.tree_util.tree_flatten_with_path(param_shardings)[0]:
        by_path[tuple(str(k) for k in path)] = s

    def pick(path, leaf):
        keys = tuple(str(k) for k in path)
        for i in range(len(keys)):
            s = by_path.get(keys[i:])
            if s is not None and len(s.spec) <= leaf.ndim:
                return s
        return sharding.replicated(mesh)

    return jax.tree_util.tree_map_with_path(pick, abstract_opt)


def state_shardings(model: nn.Module, tx, mesh, init_len: int = 8, rules=None):
    """(abstract state, shardings): shapes from `jax.eval_shape`, nothing allocated; the
    parameters sharded by their logical axes under `rules` (default LOGICAL_RULES)."""
    with jax.set_mesh(mesh), sharding.logical_rules_context(rules):
        boxed = abstract_params(model.config, sharding.data_parallel_size(mesh), init_len)
    param_sh = sharding.shardings_of(boxed, mesh, rules)
    params = nn.unbox(boxed)
    frozen = None
    if model.config.lora.rank:  # train the adapters; the base is frozen
        (params, frozen), (param_sh, frozen_sh) = lora.split(params), lora.split(param_sh)
    opt_state = jax.eval_shape(tx.init, params)
    abstract = {"step": jax.ShapeDtypeStruct((), jnp.int32), "params": params, "opt_state": opt_state,
                "rng": jax.ShapeDtypeStruct((2,), jnp.uint32)}
    rep = sharding.replicated(mesh)
    shardings = {"step": rep, "params": param_sh, "opt_state": _opt_shardings(opt_state, param_sh, mesh), "rng": rep}
    if frozen is not None:
        abstract["frozen"], shardings["frozen"] = frozen, frozen_sh
    return abstract, shardings


def setup(config, model: nn.Module, mesh):
    """What a run compiles from `config`: (Static, abstract state, its shardings, batch
    spec {field: ndim}). The training loop and `python -m llada_jax.plan` both start here."""
    d = config.data
    objective = objectives.get(d.kind)
    tx, schedule = make_optimizer(config.optim, config.train.steps)
    rules = sharding.rules_of(config.mesh)
    block_size, warmup = block_settings(config)
    st = Static(model, tx, d.kind, model.config.mask_token_id, d.eps,
                d.random_length_prob if objective.random_length else 0.0, config.optim.grad_accum, schedule, rules,
                block_size, warmup)
    abstract, shardings = state_shardings(model, tx, mesh, rules=rules)
    return st, abstract, shardings, {field: 2 for field in objective.fields}


def full_params(state):
    """The model's whole parameter tree: the params, plus the frozen LoRA base if any."""
    return lora.combine(state["params"], state["frozen"]) if "frozen" in state else state["params"]


def init_state(model: nn.Module, tx, mesh, seed: int, shardings, params=None, frozen=None, rules=None):
    """A fresh state created directly in its shardings (jit with out_shardings). With
    `params` (e.g. restored for SFT) only the optimizer state is new. LoRA: `frozen` is
    the (restored) base, added as it is; fresh adapters are initialised."""
    out_sh = {k: v for k, v in shardings.items() if k != "frozen"}
    fn = jax.jit(_init, static_argnums=(2, 3, 4), out_shardings=out_sh)
    with jax.set_mesh(mesh), sharding.logical_rules_context(rules):
        state = fn(jax.random.PRNGKey(seed), params, model, tx, sharding.data_parallel_size(mesh))
    if frozen is not None:
        state["frozen"] = frozen
    return state


def _init(key, params, model, tx, dp: int):
    """The fresh state (params too when None), for init_state's jit (model, tx, dp static)."""
    p_key, s_key = jax.random.split(key)
    if params is None:
        params = nn.unbox(model.init(p_key, jnp.zeros((dp, 8), jnp.int32))["params"])
        if model.config.lora.rank:  # the adapters only (the base init is dead code)
            params = lora.split(params)[0]
    return {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": tx.init(params), "rng": s_key}


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
    new_params, opt_state, grad_norm = apply_gradients(st.tx, params, state["opt_state"], grads)
    metrics = {"loss": loss, "masked_accuracy": m["correct"] / jnp.maximum(m["num_masked"], 1),
               "grad_norm": grad_norm, "num_masked": m["num_masked"], "seq_len": length,
               "lr": st.schedule(state["step"]) if st.schedule is not None else jnp.float32(0)}
    if "masked_prompt_tokens" in m:
        metrics["masked_prompt_tokens"] = m["masked_prompt_tokens"]
    for k in moe.METRICS:
        if k in m:  # summed over micro-batches
            metrics[k] = m[k] / st.grad_accum
    metrics["state_finite"] = all_finite((new_params, opt_state))  # the loop never saves a NaN state
    new_state = {"step": state["step"] + 1, "params": new_params, "opt_state": opt_state, "rng": rng}
    if frozen is not None:
        new_state["frozen"] = frozen
    return new_state, metrics


def apply_gradients(tx, params, opt_state, grads):
    """The optimizer update every step shares (this train step and `llada_jax.rl.step`):
    the optax chain (clipping, AdamW) applied to `grads`. Returns (params, opt_state, grad_norm)."""
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, optax.tree.norm(grads)


def all_finite(tree):
    """True when every floating-point leaf of `tree` is finite (one fused reduction)."""
    leaves = [x for x in jax.tree_util.tree_leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)]
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves])) if leaves else jnp.bool_(True)


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
