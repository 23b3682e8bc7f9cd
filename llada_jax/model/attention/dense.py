"""The reference attention: the full (B, K, G, L, S) float32 scores, masked, softmaxed."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from llada_jax.model.attention import MASK_VALUE, KeyMask, Pattern, resolve


def attention(q_BxLxHxD, k_BxSxKxD, v_BxSxKxD, mask: KeyMask, *, pattern: Pattern | None = None,
              causal: bool = False):
    pattern = resolve(pattern, causal)
    b, l, h, d = q_BxLxHxD.shape
    s, kv = k_BxSxKxD.shape[1], k_BxSxKxD.shape[2]
    q_BxLxKxQxD = q_BxLxHxD.reshape(b, l, kv, h // kv, d)
    scores = jnp.einsum("blkgd,bskd->bkgls", q_BxLxKxQxD, k_BxSxKxD,
                        preferred_element_type=jnp.float32) / jnp.sqrt(jnp.float32(d))
    valid_BxS = mask.as_bool(s)
    if valid_BxS is not None:  # invalid keys: MASK_VALUE (an all-invalid row is uniform, not NaN)
        scores = jnp.where(valid_BxS[:, None, None, None, :], scores, MASK_VALUE)
    if pattern.kind != "bidirectional":  # outside the pattern: weight exactly 0
        scores = jnp.where(jnp.asarray(pattern.dense(l, s)), scores, -jnp.inf)
    probs = jax.nn.softmax(scores, axis=-1).astype(v_BxSxKxD.dtype)
    out_BxLxKxQxD = jnp.einsum("bkgls,bskd->blkgd", probs, v_BxSxKxD)
    return out_BxLxKxQxD.reshape(b, l, h, d)
