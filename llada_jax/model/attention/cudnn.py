"""cuDNN flash attention (GPU) through `jax.nn.dot_product_attention(implementation="cudnn")`.

cuDNN expresses padding only as per-row lengths (right padding: `key_value_seq_lengths`);
an explicit boolean mask goes through its bias path, which has failed for broadcast
masks (jax-ml/jax#28974). So the train step passes right padding as `KeyMask.lengths_B`,
and a call with any other key mask (left-padded prompts, the sampler's KV-cache masks)
falls back to "chunked", with a warning the first time. cuDNN's flash kernels need
bfloat16 or float16 and a GPU: anything else fails at trace time with a ValueError.
A row of length 0 is undefined in cuDNN (the train step never makes one).
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp

from llada_jax.model.attention import KeyMask, Pattern, chunked, resolve

DTYPES = ("bfloat16", "float16")


def cudnn_arguments(mask: KeyMask, causal: bool) -> dict:
    """Keyword arguments of `jax.nn.dot_product_attention` for a lengths-or-no key mask."""
    kw = {"is_causal": bool(causal)}
    if mask.lengths_B is not None:
        kw["key_value_seq_lengths"] = mask.lengths_B.astype(jnp.int32)
    return kw


def attention(q_BxLxHxD, k_BxSxKxD, v_BxSxKxD, mask: KeyMask, *, pattern: Pattern | None = None,
              causal: bool = False):
    pattern = resolve(pattern, causal)
    if mask.valid_BxS is not None:
        warnings.warn("attention='cudnn': a boolean key mask (left padding or the sampler's KV cache) "
                      "cannot be expressed as cuDNN key lengths; using attention='chunked' for this call",
                      stacklevel=2)
        return chunked.attention(q_BxLxHxD, k_BxSxKxD, v_BxSxKxD, mask, pattern=pattern)
    if pattern.kind not in ("bidirectional", "causal"):
        warnings.warn(f"attention='cudnn': the {pattern.kind!r} pattern has no cuDNN form; "
                      "using attention='chunked' for this call", stacklevel=2)
        return chunked.attention(q_BxLxHxD, k_BxSxKxD, v_BxSxKxD, mask, pattern=pattern)
    causal = pattern.kind == "causal"
    backend = jax.default_backend()
    if backend != "gpu":
        raise ValueError(f"attention='cudnn' needs a GPU, the backend is {backend!r}; "
                         "use attention='chunked' (any backend) or 'splash' (TPU)")
    if q_BxLxHxD.dtype.name not in DTYPES:
        raise ValueError(f"attention='cudnn' computes in {' or '.join(DTYPES)}, got dtype {q_BxLxHxD.dtype.name}; "
                         "set model.dtype='bfloat16'")
    return jax.nn.dot_product_attention(q_BxLxHxD, k_BxSxKxD, v_BxSxKxD, implementation="cudnn",
                                        **cudnn_arguments(mask, causal))
