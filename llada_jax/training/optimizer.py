"""The optimizer of every run: learning-rate schedules, global-norm clipping and AdamW.

`make_optimizer(config.optim, steps)` gives the optax transformation and its schedule;
`apply_gradients` is the update that the train step and the RL step share. The schedules
are optax schedules: optax's own cosine, and warmup-stable-decay / constant pieces joined
with `optax.join_schedules`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax

SCHEDULES = ("wsd", "cosine", "constant")


def make_schedule(optim, total_steps: int):
    """Learning rate as a function of the step (a jnp scalar).

    wsd: linear warmup 0 -> lr over warmup_steps; lr (times drop_ratio from drop_step on,
    if drop_step >= 0); over the last decay_steps a linear decay to lr * final_lr_ratio.
    A warmup longer than the run's start of decay wins over the decay.
    cosine: linear warmup, then cosine decay to lr * final_lr_ratio at total_steps.
    constant: lr, after a linear warmup that reaches lr at step warmup_steps - 1.
    """
    lr, warm, final = optim.lr, optim.warmup_steps, optim.lr * optim.final_lr_ratio
    if optim.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(0.0, lr, max(warm, 0), max(total_steps, warm + 1), final)
    if optim.schedule == "constant":
        if not warm:
            return lambda step: jnp.full((), lr)
        return optax.join_schedules([lambda step: lr * jnp.minimum(1.0, (step + 1) / warm),
                                     optax.constant_schedule(lr)], [warm])
    return _wsd(optim, total_steps, lr, warm, final)


def _wsd(optim, total_steps, lr, warm, final):
    """Warmup-stable-decay as optax pieces: warmup until `warm`, lr, lr * drop_ratio from
    `drop_step`, the decay from `total_steps - decay_steps`. `join_schedules` lets a later
    boundary win, so every boundary is clamped to at least `warm` (the warmup wins) and the
    decay piece adds back what clamping took from its step count.

    The two ramps are written out rather than `optax.linear_schedule`, which computes
    (init - end) * (1 - t / T) + end: in float32 that rounds differently from
    lr * t / T, and a resumed run must see the learning rates its checkpoint was trained
    with, bit for bit."""
    decay_start = total_steps - optim.decay_steps
    at_decay = lr * (optim.drop_ratio if 0 <= optim.drop_step <= decay_start else 1.0)
    decay_begin = max(decay_start, warm)
    offset = decay_begin - decay_start

    def warmup(step):
        return lr * jnp.minimum(1.0, jnp.asarray(step, jnp.float32) / max(warm, 1))

    def decay(since):
        frac = jnp.clip((jnp.asarray(since, jnp.float32) + offset) / max(optim.decay_steps, 1), 0.0, 1.0)
        return at_decay + (final - at_decay) * frac

    schedules, boundaries = [warmup, optax.constant_schedule(lr)], [warm]
    if optim.drop_step >= 0:
        schedules.append(optax.constant_schedule(lr * optim.drop_ratio))
        boundaries.append(max(optim.drop_step, warm))
    schedules.append(decay)
    boundaries.append(decay_begin)
    return optax.join_schedules(schedules, boundaries)


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
    hashed and compared by identity, and it is part of `step.Static`, the static argument
    of the jitted init and step. Building it anew for equal settings would give a new
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


def apply_gradients(tx, params, opt_state, grads):
    """The optimizer update every step shares (`llada_jax.training.step` and
    `llada_jax.rl.step`): the optax chain (clipping, AdamW) applied to `grads`.
    Returns (params, opt_state, grad_norm)."""
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, optax.tree.norm(grads)
