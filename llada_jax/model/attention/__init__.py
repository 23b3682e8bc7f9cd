"""Attention implementations behind one signature, chosen by `LLaDAConfig.attention`.

Every implementation computes softmax(q k^T / sqrt(D)) v with grouped KV heads (query
head h uses KV head h // (H / K)) under one attention mask, two parts:

    fn(q_BxLxHxD, k_BxSxKxD, v_BxSxKxD, mask: KeyMask, *, pattern: Pattern) -> out_BxLxHxD

- `KeyMask` (data): which keys of each row are valid (padding, the sampler's cache);
- `Pattern` (static, `patterns.py`): which keys each query may see by position:
  bidirectional, causal, block-causal with a block size, or BD3-LM's training pattern
  over the concatenated noisy + clean 2L sequence.
A key outside the pattern has weight exactly 0; a valid-masked key inside it scores
MASK_VALUE, so a query whose pattern keys are all invalid gets the uniform average of
their values, as the dense reference does (finite, never NaN). `causal=True` is the
older spelling of `pattern=CAUSAL` and still accepted.

S = L for a plain forward pass; S = cache length + L on the sampler's KV-cache path
(cache keys first: query i sits at key index i + S - L).

- "dense": the reference; materialises the (B, H, L, S) float32 scores.
- "chunked": flash attention in plain JAX (online softmax over key blocks, recomputing
  backward); memory O(L x block) per head; any backend.
- "cudnn": cuDNN flash attention through `jax.nn.dot_product_attention` (GPU).
- "splash": Pallas TPU splash attention (TPU; Pallas interpret mode elsewhere).

Adding a kernel is one new file here plus one entry in `IMPLEMENTATIONS`.
"""

from __future__ import annotations

import importlib
from typing import NamedTuple

import jax
import jax.numpy as jnp

from llada_jax.model.attention.patterns import BIDIRECTIONAL, CAUSAL, Pattern, block_causal, block_diffusion, resolve

# name -> module defining `attention`; imported on first use (splash pulls in Pallas).
IMPLEMENTATIONS = {
    "dense": "llada_jax.model.attention.dense",
    "chunked": "llada_jax.model.attention.chunked",
    "cudnn": "llada_jax.model.attention.cudnn",
    "splash": "llada_jax.model.attention.splash",
}
# Large negative for masked scores: finite, so an all-masked row is uniform, not NaN.
MASK_VALUE = -1e30


class KeyMask(NamedTuple):
    """Which keys the queries of each row may attend to: at most one field is set.

    valid_BxS: boolean, True for keys that may be attended to (any pattern: left
      padding, the sampler's cache masks).
    lengths_B: int, keys [0, n) are valid (right padding); kernels such as cuDNN's take
      this form directly.
    Neither: every key is valid.
    """

    valid_BxS: jax.Array | None = None
    lengths_B: jax.Array | None = None

    def as_bool(self, s: int) -> jax.Array | None:
        """The (B, S) boolean form, or None when every key is valid."""
        if self.lengths_B is not None:
            return jnp.arange(s, dtype=jnp.int32)[None, :] < self.lengths_B.astype(jnp.int32)[:, None]
        if self.valid_BxS is not None:
            return self.valid_BxS.astype(bool)
        return None


def get(name: str):
    """The `attention` function of implementation `name`."""
    if name not in IMPLEMENTATIONS:
        raise ValueError(f"attention={name!r}: expected one of {sorted(IMPLEMENTATIONS)}")
    return importlib.import_module(IMPLEMENTATIONS[name]).attention


def attend(name: str, q_BxLxHxD, k_BxSxKxD, v_BxSxKxD, mask: KeyMask = KeyMask(), *,
           pattern: Pattern | None = None, causal: bool = False):
    """Checks the shapes and the pattern (at trace time), then runs implementation `name`."""
    b, l, h, d = q_BxLxHxD.shape
    _, s, kvh, _ = k_BxSxKxD.shape
    if k_BxSxKxD.shape != (b, s, kvh, d) or v_BxSxKxD.shape != k_BxSxKxD.shape or h % kvh:
        raise ValueError(f"attention: q {q_BxLxHxD.shape}, k {k_BxSxKxD.shape}, v {v_BxSxKxD.shape}; expected "
                         "(B, L, H, D) and (B, S, K, D) with H a multiple of K")
    pattern = resolve(pattern, causal)
    pattern.check(l, s)
    if mask.valid_BxS is not None and mask.lengths_B is not None:
        raise ValueError("attention: KeyMask takes valid_BxS or lengths_B, not both")
    if mask.valid_BxS is not None and mask.valid_BxS.shape != (b, s):
        raise ValueError(f"attention: key mask shape {mask.valid_BxS.shape}, expected (B, S) = {(b, s)}")
    if mask.lengths_B is not None and mask.lengths_B.shape != (b,):
        raise ValueError(f"attention: key lengths shape {mask.lengths_B.shape}, expected (B,) = {(b,)}")
    return get(name)(q_BxLxHxD, k_BxSxKxD, v_BxSxKxD, mask, pattern=pattern)
