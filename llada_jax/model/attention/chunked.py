"""Flash attention in plain JAX: query blocks x key blocks with an online softmax.

Written by hand because no library offers a bidirectional, memory-efficient attention
that runs on CPU, GPU and TPU alike (cuDNN's is GPU-only, splash TPU-only, and
`jax.nn.dot_product_attention(implementation="xla")` materialises the scores).

Forward (FlashAttention-2): for each query block, scan over key blocks keeping the
running max m, running sum l and unnormalised output o; out = o / l and the row's
running max m and sum l are all that is kept (m and l rather than their logsumexp,
which rounds to m when every key of a row is masked at MASK_VALUE). Backward (custom VJP): for each key
block, scan over the query blocks recomputing p = exp(s - m) / l, accumulating dk and dv
in the carry and dq across key blocks. No (L, S) array is ever stored: the largest
temporary is one (B, H, block_q, block_k) block of scores.

Lengths that are not multiples of the block are padded internally; padded keys get
-inf (excluded), masked real keys MASK_VALUE as in the dense reference, so a row whose
keys are all masked gets the same uniform average as there.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from llada_jax.model.attention import MASK_VALUE, KeyMask

BLOCK_Q = 512
BLOCK_K = 512


def attention(q_BxLxHxD, k_BxSxKxD, v_BxSxKxD, mask: KeyMask, *, causal: bool = False,
              block_q: int = BLOCK_Q, block_k: int = BLOCK_K):
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
    out = _flash(q, k, v, valid_BxS, causal, s, bq, bk)
    return out.reshape(b, lp, h, d)[:, :l]


def _blocks(x, n, axis=1):
    """(B, n * blk, ...) -> (n, B, blk, ...): the block index first, for scans."""
    x = x.reshape(x.shape[:axis] + (n, x.shape[axis] // n) + x.shape[axis + 1:])
    return jnp.moveaxis(x, axis, 0)


def _unblocks(x, axis=1):
    x = jnp.moveaxis(x, 0, axis)
    return x.reshape(x.shape[:axis] + (x.shape[axis] * x.shape[axis + 1],) + x.shape[axis + 2:])


def _scores(q_blk, k_blk, valid_blk, qi, kj, causal, s_real, bq, bk):
    """Masked scores (B, K, G, bq, bk) of one block pair, and where they are allowed."""
    scale = 1.0 / math.sqrt(q_blk.shape[-1])
    s = jnp.einsum("bqkgd,bskd->bkgqs", q_blk, k_blk, preferred_element_type=jnp.float32) * scale
    kpos = kj * bk + jnp.arange(bk)
    allowed = valid_blk[:, None, None, None, :]
    if causal:
        qpos = qi * bq + jnp.arange(bq)
        allowed = allowed & (qpos[:, None] >= kpos[None, :])
    s = jnp.where(allowed, s, MASK_VALUE)
    return jnp.where(kpos < s_real, s, -jnp.inf), allowed


def _forward(q, k, v, valid, causal, s_real, bq, bk):
    """out (B, Lp, K, G, D) in q's dtype; the row max m and 1 / sum l, (B, K, G, Lp) float32."""
    b, lp, kvh, g, d = q.shape
    nq, nk = lp // bq, k.shape[1] // bk
    k_blocks, v_blocks, valid_blocks = _blocks(k, nk), _blocks(v, nk), _blocks(valid, nk)

    def q_block(args):
        qi, q_blk = args

        def kv_step(carry, xs):
            m, l_, o = carry
            kj, k_blk, v_blk, valid_blk = xs
            s, _ = _scores(q_blk, k_blk, valid_blk, qi, kj, causal, s_real, bq, bk)
            m_new = jnp.maximum(m, jnp.max(s, axis=-1))
            corr = jnp.exp(m - m_new)
            p = jnp.exp(s - m_new[..., None])
            l_ = l_ * corr + jnp.sum(p, axis=-1)
            pv = jnp.einsum("bkgqs,bskd->bkgqd", p.astype(v.dtype), v_blk, preferred_element_type=jnp.float32)
            return (m_new, l_, o * corr[..., None] + pv), None

        init = (jnp.full((b, kvh, g, bq), -jnp.inf, jnp.float32), jnp.zeros((b, kvh, g, bq), jnp.float32),
                jnp.zeros((b, kvh, g, bq, d), jnp.float32))
        (m, l_, o), _ = jax.lax.scan(kv_step, init, (jnp.arange(nk), k_blocks, v_blocks, valid_blocks))
        out = (o / l_[..., None]).astype(q.dtype)
        return jnp.einsum("bkgqd->bqkgd", out), (m, 1.0 / l_)

    out, (m, inv_l) = jax.lax.map(q_block, (jnp.arange(nq), _blocks(q, nq)))
    return _unblocks(out), (_unblocks(m, axis=3), _unblocks(inv_l, axis=3))


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6, 7))
def _flash(q, k, v, valid, causal, s_real, bq, bk):
    return _forward(q, k, v, valid, causal, s_real, bq, bk)[0]


def _flash_fwd(q, k, v, valid, causal, s_real, bq, bk):
    out, stats = _forward(q, k, v, valid, causal, s_real, bq, bk)
    return out, (q, k, v, valid, out, stats)


def _flash_bwd(causal, s_real, bq, bk, res, do):
    q, k, v, valid, out, (m, inv_l) = res
    b, lp, kvh, g, d = q.shape
    nq, nk = lp // bq, k.shape[1] // bk
    scale = 1.0 / math.sqrt(d)
    delta = jnp.einsum("bqkgd,bqkgd->bkgq", do.astype(jnp.float32), out.astype(jnp.float32))
    q_blocks, do_blocks = _blocks(q, nq), _blocks(do, nq)
    m_blocks, inv_l_blocks = _blocks(m, nq, axis=3), _blocks(inv_l, nq, axis=3)
    delta_blocks = _blocks(delta, nq, axis=3)

    def kv_block(dq, xs):
        kj, k_blk, v_blk, valid_blk = xs

        def q_step(carry, ys):
            dk, dv = carry
            qi, q_blk, do_blk, m_blk, inv_l_blk, delta_blk = ys
            s, allowed = _scores(q_blk, k_blk, valid_blk, qi, kj, causal, s_real, bq, bk)
            p = jnp.exp(s - m_blk[..., None]) * inv_l_blk[..., None]
            dv = dv + jnp.einsum("bkgqs,bqkgd->bskd", p.astype(do.dtype), do_blk, preferred_element_type=jnp.float32)
            dp = jnp.einsum("bqkgd,bskd->bkgqs", do_blk, v_blk, preferred_element_type=jnp.float32)
            ds = (jnp.where(allowed, p * (dp - delta_blk[..., None]), 0.0) * scale).astype(q.dtype)
            dq_blk = jnp.einsum("bkgqs,bskd->bqkgd", ds, k_blk, preferred_element_type=jnp.float32)
            dk = dk + jnp.einsum("bkgqs,bqkgd->bskd", ds, q_blk, preferred_element_type=jnp.float32)
            return (dk, dv), dq_blk

        zeros = jnp.zeros((b, bk, kvh, d), jnp.float32)
        (dk, dv), dq_blocks = jax.lax.scan(
            q_step, (zeros, zeros), (jnp.arange(nq), q_blocks, do_blocks, m_blocks, inv_l_blocks, delta_blocks))
        return dq + dq_blocks, (dk, dv)

    dq0 = jnp.zeros((nq, b, bq, kvh, g, d), jnp.float32)
    dq, (dk, dv) = jax.lax.scan(kv_block, dq0, (jnp.arange(nk), _blocks(k, nk), _blocks(v, nk), _blocks(valid, nk)))
    return (_unblocks(dq).astype(q.dtype), _unblocks(dk).astype(k.dtype), _unblocks(dv).astype(v.dtype), None)


_flash.defvjp(_flash_fwd, _flash_bwd)
