"""Attention patterns: which keys a query may see by position, the half of the attention
mask that does not depend on the data (the other half, key validity, is `KeyMask`).

A `Pattern` is static (hashable, part of a compiled program): every kernel takes one and
implements it its own way (dense: a (L, S) boolean; chunked: a static list of non-empty
block pairs; splash: a block-sparse NumpyMask; cuDNN: `is_causal`, else a fallback).

Indices: key j in 0..S-1; the L queries are the last L key positions (query i sits at key
index i + S - L), so with a cache of S - L earlier keys a query keeps its place.
- "bidirectional": every key.
- "causal": keys j <= i.
- "block_causal" (block_size b): a query sees its own block and every earlier block,
  blocks of b aligned to index 0 (LLaDA 2.x, SDAR, BD3-LM at inference).
- "block_diffusion" (block_size b, length n): BD3-LM's training mask over the noisy x_t
  (indices 0..n-1) and clean x_0 (n..2n-1) concatenated (kuleshov-group/bd3lms
  `models/dit.py` block_diff_mask): a noisy token sees its own noisy block and the clean
  blocks strictly before it, a clean token the clean blocks up to its own.
Every pattern lets a query see itself, so no row is ever empty.
"""

from __future__ import annotations

import dataclasses

import numpy as np

KINDS = ("bidirectional", "causal", "block_causal", "block_diffusion")


@dataclasses.dataclass(frozen=True)
class Pattern:
    kind: str = "bidirectional"
    block_size: int = 0  # block_causal, block_diffusion
    length: int = 0  # block_diffusion: n, the length of each half (the sequence is 2n)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"attention pattern {self.kind!r}: expected one of {KINDS}")
        if self.kind in ("block_causal", "block_diffusion") and self.block_size < 1:
            raise ValueError(f"attention pattern {self.kind!r}: block_size={self.block_size}, expected >= 1")
        if self.kind == "block_diffusion" and (self.length < 1 or self.length % self.block_size):
            raise ValueError(f"attention pattern 'block_diffusion': block_size={self.block_size} must divide "
                             f"the sequence length {self.length}")

    def check(self, l: int, s: int) -> None:
        """ValueError (at trace time) for query/key lengths this pattern cannot take."""
        if self.kind == "causal" and s != l:
            raise ValueError(f"attention: causal=True needs as many keys as queries, got L={l}, S={s}")
        if self.kind == "block_diffusion" and not (l == s == 2 * self.length):
            raise ValueError(f"attention pattern 'block_diffusion' over 2 x {self.length} tokens: got L={l}, S={s}")

    def allowed(self, q_idx, k_idx):
        """Boolean of broadcast query and key indices (numpy or jax ints, key index space)."""
        if self.kind == "bidirectional":
            return (q_idx >= 0) | (k_idx >= 0)
        if self.kind == "causal":
            return k_idx <= q_idx
        b = self.block_size
        if self.kind == "block_causal":
            return k_idx // b <= q_idx // b
        n = self.length
        q_clean, k_clean = q_idx >= n, k_idx >= n
        bq, bk = (q_idx - q_clean * n) // b, (k_idx - k_clean * n) // b
        same_half_block = (bq == bk) & (q_clean == k_clean)
        noisy_sees_clean = ~q_clean & k_clean & (bk < bq)
        clean_sees_clean = q_clean & k_clean & (bk <= bq)
        return same_half_block | noisy_sees_clean | clean_sees_clean

    def query_index(self, i, l: int, s: int):
        """Key-space index of query row i; padded rows (i >= l) act as the last real one."""
        return np.minimum(i, l - 1) + (s - l) if isinstance(i, np.ndarray) else _jnp_min(i, l - 1) + (s - l)

    def dense(self, l: int, s: int, lp: int | None = None, sp: int | None = None) -> np.ndarray:
        """(lp, sp) numpy bool (default (l, s)); padded keys (>= s) are False."""
        lp, sp = lp or l, sp or s
        q = self.query_index(np.arange(lp), l, s)[:, None]
        k = np.arange(sp)[None, :]
        return np.asarray(self.allowed(q, k)) & (k < s)

    def block_pairs(self, l: int, s: int, bq: int, bk: int) -> np.ndarray:
        """(n, 2) int32 (query block, key block) pairs with any allowed entry, row-major."""
        lp, sp = -(-l // bq) * bq, -(-s // bk) * bk
        full = self.dense(l, s, lp, sp)
        nonempty = full.reshape(lp // bq, bq, sp // bk, bk).any(axis=(1, 3))
        return np.argwhere(nonempty).astype(np.int32)


def _jnp_min(i, m):
    import jax.numpy as jnp

    return jnp.minimum(i, m)


BIDIRECTIONAL = Pattern()
CAUSAL = Pattern("causal")


def block_causal(block_size: int) -> Pattern:
    return Pattern("block_causal", block_size)


def block_diffusion(length: int, block_size: int) -> Pattern:
    return Pattern("block_diffusion", block_size, length)


def resolve(pattern: Pattern | None, causal: bool) -> Pattern:
    """The pattern of a kernel call: `pattern`, or the older `causal` flag's."""
    if pattern is None:
        return CAUSAL if causal else BIDIRECTIONAL
    if causal and pattern.kind != "causal":
        raise ValueError(f"attention: causal=True and pattern={pattern.kind!r}; pass one of them")
    return pattern
