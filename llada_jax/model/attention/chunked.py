"""Flash attention in plain JAX: an online softmax over the non-empty (query block, key
block) pairs of the attention pattern.

Written by hand because no library offers a bidirectional, memory-efficient attention
that runs on CPU, GPU and TPU alike (cuDNN's is GPU-only, splash TPU-only, and
`jax.nn.dot_product_attention(implementation="xla")` materialises the scores).

Block skipping: the pattern (`patterns.Pattern`, static) gives the list of block pairs
with any allowed entry; forward and backward scan over that list only, so the work
follows the mask's non-empty area (BD3-LM's 2L training mask: about half of the pairs;
causal: about half; bidirectional: all). Key validity (`KeyMask`) is data and never
skips a block.

Forward (FlashAttention-2): the running max m, running sum l and unnormalised output o
of every query row are the scan's carry; each pair updates its query block's slice.
out = o / l, and m and l are all that is kept (rather than their logsumexp, which rounds
to m when every key of a row is masked at MASK_VALUE). Backward (custom VJP): the same
pairs again, recomputing p = exp(s - m) / l and accumulating dq, dk and dv into their
blocks. No (L, S) array is ever stored: the largest temporary is one (B, H, block_q,
block_k) block of scores.

Lengths that are not multiples of the block are padded internally; padded keys and keys
outside the pattern get -inf (weight 0), valid-masked keys MASK_VALUE as in the dense
reference, so a row whose keys are all masked gets the same uniform average as there.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from llada_jax.model.attention import MASK_VALUE, KeyMask, Pattern, resolve

BLOCK_Q = 512
BLOCK_K = 512


def attention(q_BxLxHxD, k_BxSxKxD, v_BxSxKxD, mask: KeyMask, *, pattern: Pattern | None = None,
              causal: bool = False, block_q: int = BLOCK_Q, block_k: int = BLOCK_K):
    pattern = resolve(pattern, causal)
    b, l, h, d = q_BxLxHxD.shape
    s, kvh = k_BxSxKxD.shape[1], k_BxSxKxD.shape[2]
    bq, bk = min(block_q, l), min(block_k, s)
    lp, sp = math.ceil(l / bq) * bq, math.ceil(s / bk) * bk
    valid = mask.as_bool(s)
    valid_BxS = jnp.ones((b, s), bool) if valid is None else valid
    q = jnp.pad(q_BxLxHxD, ((0, 0), (0, lp - l), (0, 0), (0, 0))).reshape(b, lp, kvh, h // kvh, d)
    k = jnp.pad(k_BxSxKxD, ((0, 0), (0, sp - s), (0, 0), (0, 0)))
    v = jnp.pad(v_BxSxKxD, ((0, 0), (0, sp - s), (0, 0), (0, 0)))
    valid_BxS = jnp.pad(valid_BxS, ((0, 0), (0, sp - s)))
    out = _flash(q, k, v, valid_BxS, _Geometry(pattern, l, s, bq, bk))
    return out.reshape(b, lp, h, d)[:, :l]


def work_fraction(pattern: Pattern, l: int, s: int, block_q: int = BLOCK_Q, block_k: int = BLOCK_K) -> float:
    """The fraction of all block pairs this kernel computes for `pattern` (1.0: dense's work)."""
    bq, bk = min(block_q, l), min(block_k, s)
    return len(pattern.block_pairs(l, s, bq, bk)) / (math.ceil(l / bq) * math.ceil(s / bk))


class _Geometry(tuple):
    """Static settings (pattern, L, S, block sizes): hashable, a nondiff argument."""

    def __new__(cls, pattern, l, s, bq, bk):
        return super().__new__(cls, (pattern, l, s, bq, bk))


def _slice(x, i, size, axis):
    return jax.lax.dynamic_slice_in_dim(x, i * size, size, axis=axis)


def _update(x, blk, i, size, axis):
    return jax.lax.dynamic_update_slice_in_dim(x, blk, i * size, axis=axis)


def _scores(q_blk, k_blk, valid_blk, qi, kj, geo):
    """Masked scores (B, K, G, bq, bk) of one block pair, and where they count."""
    pattern, l, s, bq, bk = geo
    scale = 1.0 / math.sqrt(q_blk.shape[-1])
    sc = jnp.einsum("bqkgd,bskd->bkgqs", q_blk, k_blk, preferred_element_type=jnp.float32) * scale
    kpos = kj * bk + jnp.arange(bk)
    qpos = pattern.query_index(qi * bq + jnp.arange(bq), l, s)
    in_pattern = pattern.allowed(qpos[:, None], kpos[None, :]) & (kpos < s)[None, :]
    valid = valid_blk[:, None, None, None, :]
    sc = jnp.where(valid, sc, MASK_VALUE)
    return jnp.where(in_pattern, sc, -jnp.inf), valid & in_pattern


def _forward(q, k, v, valid, geo):
    """out (B, Lp, K, G, D) in q's dtype; the row max m and 1 / sum l, (B, K, G, Lp) float32."""
    pattern, l, s, bq, bk = geo
    b, lp, kvh, g, d = q.shape
    pairs = jnp.asarray(pattern.block_pairs(l, s, bq, bk))

    def step(carry, pair):
        m, l_, o = carry
        qi, kj = pair[0], pair[1]
        sc, _ = _scores(_slice(q, qi, bq, 1), _slice(k, kj, bk, 1), _slice(valid, kj, bk, 1), qi, kj, geo)
        m_b, l_b, o_b = _slice(m, qi, bq, 3), _slice(l_, qi, bq, 3), _slice(o, qi, bq, 3)
        m_new = jnp.maximum(m_b, jnp.max(sc, axis=-1))
        m_safe = jnp.where(jnp.isfinite(m_new), m_new, 0.0)  # a row with nothing allowed yet
        corr = jnp.exp(m_b - m_safe)
        p = jnp.exp(sc - m_safe[..., None])
        l_b = l_b * corr + jnp.sum(p, axis=-1)
        pv = jnp.einsum("bkgqs,bskd->bkgqd", p.astype(v.dtype), _slice(v, kj, bk, 1),
                        preferred_element_type=jnp.float32)
        o_b = o_b * corr[..., None] + pv
        return (_update(m, m_new, qi, bq, 3), _update(l_, l_b, qi, bq, 3), _update(o, o_b, qi, bq, 3)), None

    init = (jnp.full((b, kvh, g, lp), -jnp.inf, jnp.float32), jnp.zeros((b, kvh, g, lp), jnp.float32),
            jnp.zeros((b, kvh, g, lp, d), jnp.float32))
    (m, l_, o), _ = jax.lax.scan(step, init, pairs)
    out = jnp.einsum("bkgqd->bqkgd", (o / l_[..., None]).astype(q.dtype))
    return out, (m, 1.0 / l_)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _flash(q, k, v, valid, geo):
    return _forward(q, k, v, valid, geo)[0]


def _flash_fwd(q, k, v, valid, geo):
    out, stats = _forward(q, k, v, valid, geo)
    return out, (q, k, v, valid, out, stats)


def _flash_bwd(geo, res, do):
    pattern, l, s, bq, bk = geo
    q, k, v, valid, out, (m, inv_l) = res
    scale = 1.0 / math.sqrt(q.shape[-1])
    delta = jnp.einsum("bqkgd,bqkgd->bkgq", do.astype(jnp.float32), out.astype(jnp.float32))
    pairs = jnp.asarray(pattern.block_pairs(l, s, bq, bk))

    def step(carry, pair):
        dq, dk, dv = carry
        qi, kj = pair[0], pair[1]
        q_blk, k_blk, v_blk, do_blk = _slice(q, qi, bq, 1), _slice(k, kj, bk, 1), _slice(v, kj, bk, 1), \
            _slice(do, qi, bq, 1)
        sc, allowed = _scores(q_blk, k_blk, _slice(valid, kj, bk, 1), qi, kj, geo)
        p = jnp.exp(sc - _slice(m, qi, bq, 3)[..., None]) * _slice(inv_l, qi, bq, 3)[..., None]
        dv_blk = jnp.einsum("bkgqs,bqkgd->bskd", p.astype(do.dtype), do_blk, preferred_element_type=jnp.float32)
        dp = jnp.einsum("bqkgd,bskd->bkgqs", do_blk, v_blk, preferred_element_type=jnp.float32)
        ds = (jnp.where(allowed, p * (dp - _slice(delta, qi, bq, 3)[..., None]), 0.0) * scale).astype(q.dtype)
        dq_blk = jnp.einsum("bkgqs,bskd->bqkgd", ds, k_blk, preferred_element_type=jnp.float32)
        dk_blk = jnp.einsum("bkgqs,bqkgd->bskd", ds, q_blk, preferred_element_type=jnp.float32)
        return (_update(dq, _slice(dq, qi, bq, 1) + dq_blk, qi, bq, 1),
                _update(dk, _slice(dk, kj, bk, 1) + dk_blk, kj, bk, 1),
                _update(dv, _slice(dv, kj, bk, 1) + dv_blk, kj, bk, 1)), None

    init = (jnp.zeros(q.shape, jnp.float32), jnp.zeros(k.shape, jnp.float32), jnp.zeros(v.shape, jnp.float32))
    (dq, dk, dv), _ = jax.lax.scan(step, init, pairs)
    return dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype), None


_flash.defvjp(_flash_fwd, _flash_bwd)
