"""One step's rules of the reverse process: the candidate tokens of the positions that can
be revealed (Gumbel-max at a temperature, top-k/top-p filters, `logits_eos_inf`), their
confidence (`llada_jax.sampling.confidence`), how many tokens each step reveals and which.

`predict` takes the option values from the sampler's static options (one program per
value); `predict_rows` takes them per row (`Rows`, traced), as the serving engine does.
`options` is the sampler's `_Options`.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from llada_jax.sampling import confidence
from llada_jax.sampling.params import REMASKING

_NEG_INF = -jnp.inf


def num_transfer_tokens(n_masked, steps):
    """Tokens revealed at each of `steps` steps: n // s each, one more in the first n % s.

    n_masked: (B,) int. Returns (B, steps) int32.
    """
    base = n_masked[:, None] // steps
    extra = jnp.arange(steps)[None, :] < (n_masked % steps)[:, None]
    return (base + extra).astype(jnp.int32)


def select_transfer(confidence_BxM, k_B, threshold=None):
    """Which candidates to reveal: the k most confident per row (ties to the lower index),
    and with `threshold` (a number, or (B,) per row with +inf for off) also every
    candidate whose confidence exceeds it. Positions with confidence -inf are never
    candidates."""
    order = jnp.argsort(-confidence_BxM, axis=-1, stable=True)
    rank = jnp.argsort(order, axis=-1)
    select = rank < k_B[:, None]
    if threshold is not None:
        threshold = jnp.asarray(threshold)
        select = select | (confidence_BxM > (threshold[:, None] if threshold.ndim else threshold))
    return select & (confidence_BxM > _NEG_INF)


class Rows(NamedTuple):
    """Per-row option values, traced (so no value compiles a new program); `rows_of`
    builds them from SamplingParams."""

    temperature: jax.Array  # (B,) float32; 0: greedy
    threshold: jax.Array  # (B,) float32; +inf: off
    cfg_weight: jax.Array  # (B,) float32: cfg_scale + 1; 1: unguided
    top_k: jax.Array  # (B,) int32; 0: off
    top_p: jax.Array  # (B,) float32; 1: off
    remasking: jax.Array  # (B,) int32 index into REMASKING


def rows_of(params_list) -> Rows:
    """Rows (numpy) of a list of SamplingParams, one per row."""
    return Rows(np.asarray([p.temperature for p in params_list], np.float32),
                np.asarray([np.inf if p.threshold is None else p.threshold for p in params_list], np.float32),
                np.asarray([p.cfg_scale + 1.0 for p in params_list], np.float32),
                np.asarray([p.top_k for p in params_list], np.int32),
                np.asarray([p.top_p for p in params_list], np.float32),
                np.asarray([REMASKING.index(p.remasking) for p in params_list], np.int32))


def filter_top(logits_BxMxV, top_k_B, top_p_B, mode="auto"):
    """Logits outside each row's top-k (0: off) and top-p (1: off) set to -inf (ties with
    the k-th / the cut are kept). mode: as `_Options.filter`."""
    def cut(logits):
        v = logits.shape[-1]
        desc = -jnp.sort(-logits.astype(jnp.float32), axis=-1)
        k = jnp.where(top_k_B > 0, jnp.minimum(top_k_B, v), v)
        kth = jnp.take_along_axis(desc, jnp.broadcast_to((k - 1)[:, None, None], desc.shape[:2] + (1,)), -1)
        probs = jax.nn.softmax(desc, axis=-1)
        before = jnp.cumsum(probs, axis=-1) - probs  # mass strictly above each sorted token
        n_p = jnp.maximum(jnp.sum(before < top_p_B[:, None, None], axis=-1, keepdims=True), 1)
        pth = jnp.take_along_axis(desc, n_p - 1, -1)
        keep = (logits >= kth) & ((top_p_B[:, None, None] >= 1) | (logits >= pth))
        return jnp.where(keep, logits, _NEG_INF)

    if mode is None:
        return logits_BxMxV
    if mode == "on":
        return cut(logits_BxMxV)
    active = jnp.any((top_k_B > 0) | (top_p_B < 1))
    return jax.lax.cond(active, cut, lambda logits: logits, logits_BxMxV)


def _per_row(rng):
    # (B,) typed keys: one random stream per row (a raw uint32 (2,) PRNGKey is one key)
    return jax.dtypes.issubdtype(rng.dtype, jax.dtypes.prng_key) and rng.ndim == 1


def _split2(rng):
    if _per_row(rng):
        k = jax.vmap(jax.random.split)(rng)
        return k[:, 0], k[:, 1]
    return tuple(jax.random.split(rng))


def predict_rows(logits_BxMxV, rng, options, rows: Rows, static_rule: bool = True):
    """`predict` with per-row temperature, top-k/p (and, unless static_rule, remasking).
    rng: one key (the batch's noise drawn at the batch's shape, as `predict`) or (B,)
    keys (each row's noise from its own key: a row's draw does not depend on the others)."""
    if options.logits_eos_inf:
        logits_BxMxV = logits_BxMxV.at[..., options.eos_id].set(_NEG_INF)
    logits_BxMxV = filter_top(logits_BxMxV, rows.top_k, rows.top_p, options.filter)
    noise_rng, rand_rng = _split2(rng)
    scores = logits_BxMxV.astype(jnp.float32)

    def noisy(scores):  # Gumbel-max in float32: argmax(logits + T * g); T = 0 rows unchanged
        if _per_row(rng):
            g = jax.vmap(lambda k: jax.random.gumbel(k, scores.shape[1:], jnp.float32))(noise_rng)
        else:
            g = jax.random.gumbel(noise_rng, scores.shape, jnp.float32)
        return scores + rows.temperature[:, None, None] * g

    if options.noise == "on":
        scores = noisy(scores)
    elif options.noise == "auto":
        scores = jax.lax.cond(jnp.any(rows.temperature > 0), noisy, lambda scores: scores, scores)
    x0 = confidence.first_argmax(scores)

    def rule(name):
        fn = confidence.RULES[name]
        if _per_row(rng):
            return jax.vmap(lambda l, x, k: fn(l[None], x[None], k, options)[0])(logits_BxMxV, x0, rand_rng)
        return fn(logits_BxMxV, x0, rand_rng, options)

    if static_rule:
        return x0, rule(options.remasking)
    conf = rule(REMASKING[0])
    for i, name in enumerate(REMASKING[1:], 1):
        conf = jnp.where((rows.remasking == i)[:, None], rule(name), conf)
    return x0, conf


def predict(logits_BxMxV, rng, options):
    """Candidate tokens x0 and their confidence for the given positions (the published generate.py)."""
    if options.logits_eos_inf:
        logits_BxMxV = logits_BxMxV.at[..., options.eos_id].set(_NEG_INF)
    noise_rng, rand_rng = jax.random.split(rng)
    scores = logits_BxMxV.astype(jnp.float32)
    if options.temperature > 0:  # Gumbel-max in float32: argmax(logits + T * g)
        scores = scores + options.temperature * jax.random.gumbel(noise_rng, scores.shape, jnp.float32)
    x0 = confidence.first_argmax(scores)
    return x0, confidence.RULES[options.remasking](logits_BxMxV, x0, rand_rng, options)
