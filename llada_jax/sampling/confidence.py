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


def first_argmax(x):
    """argmax over the last axis (first index of the max). XLA:CPU's argmax, a variadic
    value+index reduce, is about 4x slower than this max + min-index pair on a vocabulary."""
    m = jnp.max(x, axis=-1, keepdims=True)
    iota = jax.lax.broadcasted_iota(jnp.int32, x.shape, x.ndim - 1)
    return jnp.min(jnp.where(x == m, iota, x.shape[-1]), axis=-1)


def low_confidence(logits_BxMxV, x0_BxM, rng, options):
    """The softmax probability of x0 (without materialising the whole softmax); with
    `confidence_eos_eot_inf`, EOS/EoT get zero probability and the rest are renormalised."""
    conf_logits = logits_BxMxV.astype(jnp.float32)
    if options.confidence_eos_eot_inf:
        conf_logits = conf_logits.at[..., options.eos_id].set(_NEG_INF).at[..., options.eot_id].set(_NEG_INF)
    picked = jnp.take_along_axis(conf_logits, x0_BxM[..., None], axis=-1)[..., 0]
    return jnp.exp(picked - jax.nn.logsumexp(conf_logits, axis=-1))


def random(logits_BxMxV, x0_BxM, rng, options):
    """Uniform random confidence: reveal in a random order."""
    return jax.random.uniform(rng, x0_BxM.shape, jnp.float32)


RULES = {"low_confidence": low_confidence, "random": random}
