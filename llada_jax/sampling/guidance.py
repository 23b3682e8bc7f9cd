"""Classifier-free guidance: the model's logits with an unconditional copy of the batch
(every prompt position masked) mixed in. Used by the sampler and, with cfg_scale > 0, by
the Monte Carlo likelihood."""

from __future__ import annotations

import jax.numpy as jnp


def guided_logits(model, params, x, prompt_mask, cfg_scale, mask_id, attention_mask=None, *,
                  kv_cache=None, return_kv=False, **kw):
    """Logits with classifier-free guidance: the unconditional copy has every prompt
    position masked; `uncond + (cfg_scale + 1) * (cond - uncond)`. cfg_scale is static.

    Other keyword arrays (positions, output_positions) are per row and get doubled with
    the batch; a `kv_cache` must already hold both copies (2B rows, conditional first),
    as the one returned with `return_kv` does.
    """
    if cfg_scale > 0:
        x = jnp.concatenate([x, jnp.where(prompt_mask, mask_id, x)], axis=0)
        if attention_mask is not None:
            attention_mask = jnp.concatenate([attention_mask] * 2, axis=0)
        kw = {k: None if v is None else jnp.concatenate([v, v], axis=0) for k, v in kw.items()}
    out = model.apply({"params": params}, x, attention_mask, kv_cache=kv_cache, return_kv=return_kv, **kw)
    logits, kv = out if return_kv else (out, None)
    if cfg_scale > 0:
        cond, uncond = jnp.split(logits, 2, axis=0)
        logits = uncond + (cfg_scale + 1.0) * (cond - uncond)
    return (logits, kv) if return_kv else logits


def guided_logits_rows(model, params, x, prompt_mask, cfg_weight_B, mask_id, attention_mask=None, *, guidance,
                       kv_cache=None, return_kv=False, **kw):
    """`guided_logits` with a per-row scale: cfg_weight_B (B,) float32 is cfg_scale + 1 and
    a row with weight 1 keeps its conditional logits. `guidance` (static: it doubles the
    batch) says whether the unconditional copy is computed at all."""
    if guidance:
        x = jnp.concatenate([x, jnp.where(prompt_mask, mask_id, x)], axis=0)
        if attention_mask is not None:
            attention_mask = jnp.concatenate([attention_mask] * 2, axis=0)
        kw = {k: None if v is None else jnp.concatenate([v, v], axis=0) for k, v in kw.items()}
    out = model.apply({"params": params}, x, attention_mask, kv_cache=kv_cache, return_kv=return_kv, **kw)
    logits, kv = out if return_kv else (out, None)
    if guidance:
        cond, uncond = jnp.split(logits, 2, axis=0)
        w = cfg_weight_B.astype(cond.dtype)[:, None, None]
        logits = jnp.where(w > 1, uncond + w * (cond - uncond), cond)
    return (logits, kv) if return_kv else logits
