"""The reference attention: the full (B, K, G, L, S) float32 scores, masked, softmaxed."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from llada_jax.model.attention import MASK_VALUE, KeyMask


def allowed_mask(mask: KeyMask, b: int, l: int, s: int, causal: bool):
    """(B, L, S) boolean: which keys each query may attend to; None when all."""
    valid = mask.as_bool(s)
    allowed = None if valid is None else jnp.broadcast_to(valid[:, None, :], (b, l, s))
    if causal:
        tril = jnp.broadcast_to(jnp.tril(jnp.ones((l, s), dtype=bool)), (b, l, s))
        allowed = tril if allowed is None else allowed & tril
    return allowed


def attention(q_BxLxHxD, k_BxSxKxD, v_BxSxKxD, mask: KeyMask, *, causal: bool = False):
    b, l, h, d = q_BxLxHxD.shape
    s, kv = k_BxSxKxD.shape[1], k_BxSxKxD.shape[2]
    q_BxLxKxQxD = q_BxLxHxD.reshape(b, l, kv, h // kv, d)
    scores = jnp.einsum("blkgd,bskd->bkgls", q_BxLxKxQxD, k_BxSxKxD,
                        preferred_element_type=jnp.float32) / jnp.sqrt(jnp.float32(d))
    allowed_BxLxS = allowed_mask(mask, b, l, s, causal)
    if allowed_BxLxS is not None:
        scores = jnp.where(allowed_BxLxS[:, None, None], scores, MASK_VALUE)
    probs = jax.nn.softmax(scores, axis=-1).astype(v_BxSxKxD.dtype)
    out_BxLxKxQxD = jnp.einsum("bkgls,bskd->blkgd", probs, v_BxSxKxD)
    return out_BxLxKxQxD.reshape(b, l, h, d)
