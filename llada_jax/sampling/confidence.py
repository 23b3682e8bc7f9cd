"""Confidence (remasking) rules of the sampler: which of the predicted tokens x0 a
reverse step reveals first. Each rule maps (logits_BxMxV, x0_BxM, rng, options) to a
(B, M) float32 confidence; the most confident are revealed (the published generate.py).

A new rule is one function here (or in a new module) plus one line in RULES; it is then
a valid `remasking=` of `generate` and `--remasking` of `python -m llada_jax.generate`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

_NEG_INF = -jnp.inf


def _split_last(x):
    """x with its last axis V split into (V / C, C), or None when no C in 256..32 divides V.
    XLA:CPU reduces a whole vocabulary through a slow reduce-window or YNNPACK fusion; over
    the two shorter axes in turn, an exact sampler's step at d_model 256, batch 8, vocabulary
    126464 takes 163 ms instead of 255 (benchmarks/sample.py's model, 32 positions a step)."""
    v = x.shape[-1]
    c = next((c for c in (256, 128, 64, 32) if v % c == 0 and v > c), None)
    return None if c is None else x.reshape(*x.shape[:-1], v // c, c)


def _first_index(x, value):
    """The first index of `value` (..., ) along x's last axis; x.shape[-1] where absent."""
    iota = jax.lax.broadcasted_iota(jnp.int32, x.shape, x.ndim - 1)
    return jnp.min(jnp.where(x == value[..., None], iota, x.shape[-1]), axis=-1)


def first_argmax(x):
    """argmax over the last axis (first index of the max). XLA:CPU's argmax, a variadic
    value+index reduce, is about 4x slower than this max + min-index pair on a vocabulary,
    which runs over its (V / C, C) split where one exists."""
    split = _split_last(x)
    if split is None:
        return _first_index(x, jnp.max(x, axis=-1))
    chunk_max = jnp.max(split, axis=-1)
    m = jnp.max(chunk_max, axis=-1)
    chunk = _first_index(chunk_max, m)  # the first chunk holding the max, then its first index
    inner = jnp.take_along_axis(split, chunk[..., None, None], axis=-2, mode="clip")[..., 0, :]
    return chunk * split.shape[-1] + _first_index(inner, m)


def low_confidence(logits_BxMxV, x0_BxM, rng, options):
    """The softmax probability of x0 (without materialising the whole softmax); with
    `confidence_eos_eot_inf`, EOS/EoT get zero probability and the rest are renormalised."""
    conf_logits = logits_BxMxV.astype(jnp.float32)
    if options.confidence_eos_eot_inf:
        conf_logits = conf_logits.at[..., options.eos_id].set(_NEG_INF).at[..., options.eot_id].set(_NEG_INF)
    picked = jnp.take_along_axis(conf_logits, x0_BxM[..., None], axis=-1)[..., 0]
    split = _split_last(conf_logits)
    if split is None:
        return jnp.exp(picked - jax.nn.logsumexp(conf_logits, axis=-1))
    m = jnp.max(jnp.max(split, axis=-1), axis=-1)  # logsumexp over the split, in two sums:
    # the barrier keeps XLA from merging them back into one (YNNPACK's fusion of that sum of
    # exponentials takes 60 ms a step at the shape above, the two 10 ms)
    partial = jax.lax.optimization_barrier(jnp.sum(jnp.exp(split - m[..., None, None]), axis=-1))
    return jnp.exp(picked - m) / jnp.sum(partial, axis=-1)


def random(logits_BxMxV, x0_BxM, rng, options):
    """Uniform random confidence: reveal in a random order."""
    return jax.random.uniform(rng, x0_BxM.shape, jnp.float32)


RULES = {"low_confidence": low_confidence, "random": random}
