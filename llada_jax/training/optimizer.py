"""The optimizer and its learning-rate schedules: global-norm clipping, then AdamW
(weight decay on matrices only), under a warmup-stable-decay, cosine or constant
schedule built from optax's schedule combinators."""

from __future__ import annotations

import functools

import jax
import optax

SCHEDULES = ("wsd", "cosine", "constant")


def make_schedule(optim, total_steps: int):
    """Learning rate as a function of the step (a jnp scalar).

    wsd: linear warmup 0 -> lr over warmup_steps; lr (times drop_ratio from drop_step on,
    if drop_step >= 0); over the last decay_steps a linear decay to lr * final_lr_ratio.
    cosine: linear warmup, then cosine decay to lr * final_lr_ratio at total_steps.
    constant: lr * (step + 1) / warmup_steps over the warmup, then lr.
    """
    lr, warm, final = optim.lr, optim.warmup_steps, optim.lr * optim.final_lr_ratio
    if optim.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(0.0, lr, max(warm, 0), max(total_steps, warm + 1), final)
    if optim.schedule == "constant":  # lr * (step + 1) / warmup_steps during the warmup
        return optax.join_schedules([optax.linear_schedule(lr / max(warm, 1), lr, max(warm - 1, 0)),
                                     optax.constant_schedule(lr)], [warm])
    stages = [(0, optax.linear_schedule(0.0, lr, warm))] if warm else []  # (first step, schedule)
    decay_start = total_steps - optim.decay_steps
    drop = optim.drop_step if 0 <= optim.drop_step <= decay_start else None  # no drop inside the decay
    dropped = lr * optim.drop_ratio
    stages.append((warm, optax.constant_schedule(dropped if drop is not None and drop <= warm else lr)))
    if drop is not None and drop > warm:
        stages.append((drop, optax.constant_schedule(dropped)))
    at_decay = lr if drop is None else dropped
    decay = optax.linear_schedule(at_decay, final, max(optim.decay_steps, 1))
    if decay_start >= warm:
        stages.append((decay_start, decay))
    else:  # the decay began inside the warmup: after it, continue the decay where it is by then
        stages.append((warm, lambda step: decay(step + warm - decay_start)))
    return optax.join_schedules(*_unzip(stages))


def _unzip(stages):
    """optax.join_schedules' (schedules, boundaries) of [(first step, schedule), ...]."""
    return [s for _, s in stages], [b for b, _ in stages[1:]]


def _decay_mask(params):
    """Weight decay on matrices only, not on the norm scales."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: not any("norm" in str(k) or "ln_f" in str(k) for k in path), params)


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


def apply_gradients(tx, params, opt_state, grads):
    """The optimizer update every step shares (the train step and `llada_jax.rl.step`):
    the optax chain (clipping, AdamW) applied to `grads`. Returns (params, opt_state, grad_norm)."""
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, optax.tree.norm(grads)
