"""One block of the reverse process for every slot of the engine's batch, jitted once per
(slots, canvas length): each row has its own block start, block length, step count,
random stream and option values, so rows join and leave between calls and nothing but
the shapes is static.

A row's canvas is `[left padding | prompt | answer masks | tail padding]` with the padding
masked out of attention and RoPE positions counted over the row's own tokens, so a row's
computation depends only on itself: at any temperature its tokens are those it gets
alone in the batch (the engine's batch invariance). The step rules are the sampler's
(`llada_jax.sampling.sampler`): the block's schedule, Gumbel-max draw, confidence rule,
threshold and Fast-dLLM's dual cache ("dual": later steps rerun only the block window
against cached keys/values of every other position).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from llada_jax.sampling import reveal, sampler
from llada_jax.sampling.guidance import guided_logits_rows

CACHES = (None, "dual")


class BlockInputs(NamedTuple):
    """Per-row arrays of one engine call (B = slots, L = canvas length)."""

    x: jax.Array  # (B, L) int32 tokens: committed answer, masks in open blocks
    key_mask: jax.Array  # (B, L) bool: the row's own tokens (False on padding)
    positions: jax.Array  # (B, L) int32 RoPE positions (0 at the row's first token)
    is_prompt: jax.Array  # (B, L) bool: prompt tokens (masked in cfg's unconditional copy)
    start: jax.Array  # (B,) int32 first position of the row's current block
    block_length: jax.Array  # (B,) int32 (<= the window); 0 for an empty slot
    steps: jax.Array  # (B,) int32 steps of this block (<= block_length); 0: no reveal
    block_index: jax.Array  # (B,) int32 the block's index in the row's answer
    seed: jax.Array  # (B,) uint32 the request's seed


def window_options(width: int, mask_id: int, eos_id: int, eot_id: int, *, cache=None, guidance=False,
                   logits_eos_inf=False, confidence_eos_eot_inf=False) -> sampler._Options:
    """The static part: the block window `width`, the special ids and rule flags."""
    if cache not in CACHES:
        raise ValueError(f"engine: cache={cache!r}, expected one of {CACHES}")
    return sampler._Options(prompt_len=0, gen_length=width, block_length=width, steps_per_block=width,
                            temperature=0.0, cfg_scale=0.0, remasking="low_confidence", mask_id=mask_id,
                            logits_eos_inf=logits_eos_inf, confidence_eos_eot_inf=confidence_eos_eot_inf,
                            eos_id=eos_id, eot_id=eot_id, threshold=None, infill=False, cache=cache,
                            guidance=guidance)


def _row_keys(seed_B, block_B):
    return jax.vmap(lambda s, k: jax.random.fold_in(jax.random.key(s), k))(seed_B, block_B)


@functools.partial(jax.jit, static_argnames=("model", "options"))
def run_block(model, params, inp: BlockInputs, rows: reveal.Rows, options: sampler._Options):
    """Run every row's current block to its end. Returns (x, reveal_step, calls): the
    tokens, (B, L) int32 the step of the block at which each position was revealed (-1:
    not in this call) and the number of model calls made."""
    b, l = inp.x.shape
    w = options.block_length
    pos = jnp.minimum(inp.start[:, None] + jnp.arange(w, dtype=jnp.int32)[None, :], l - 1)  # (B, W)
    candidate = jnp.arange(w)[None, :] < inp.block_length[:, None]
    has_threshold = jnp.isfinite(rows.threshold)
    steps = jnp.maximum(inp.steps, 1)

    def open_masks(x):
        return (jnp.take_along_axis(x, pos, axis=1) == options.mask_id) & candidate

    n = jnp.sum(open_masks(inp.x), axis=1)
    i_w = jnp.arange(w)[None, :]
    schedule = jnp.where(i_w < inp.steps[:, None], n[:, None] // steps[:, None] + (i_w < (n % steps)[:, None]), 0)
    block_keys = _row_keys(inp.seed, inp.block_index)
    kv_on = options.cache is not None

    def k_at(i):
        k = schedule[:, i]
        return jnp.where(has_threshold & (i < inp.steps), jnp.maximum(k, 1), k)

    def transfer(state, logits, i):
        keys = jax.vmap(lambda k: jax.random.fold_in(k, i))(block_keys)
        return sampler._transfer(state, logits, pos, k_at(i), keys, options, rows, candidate, static_rule=False)

    out = guided_logits_rows(model, params, inp.x, inp.is_prompt, rows.cfg_weight, options.mask_id, inp.key_mask,
                             guidance=options.guidance, positions=inp.positions, output_positions=pos,
                             return_kv=kv_on)
    logits, kv = out if kv_on else (out, None)
    state = sampler._State(inp.x, jnp.full((b, l), -1, jnp.int32), jnp.int32(0))
    state = transfer(state, logits, 0)
    in_window = (jnp.arange(l)[None, :] >= inp.start[:, None]) & (jnp.arange(l)[None, :] < inp.start[:, None] + w)

    def later(c):
        state, i = c
        if kv is None:
            logits = guided_logits_rows(model, params, state.x, inp.is_prompt, rows.cfg_weight, options.mask_id,
                                        inp.key_mask, guidance=options.guidance, positions=inp.positions,
                                        output_positions=pos)
        else:  # the window is right of the prompt: its unconditional copy is itself
            window = jnp.take_along_axis(state.x, pos, axis=1)
            key_mask = jnp.concatenate([inp.key_mask & ~in_window, jnp.take_along_axis(inp.key_mask, pos, 1)], 1)
            logits = guided_logits_rows(model, params, window, jnp.zeros_like(window, bool), rows.cfg_weight,
                                        options.mask_id, key_mask, guidance=options.guidance, kv_cache=kv,
                                        positions=jnp.take_along_axis(inp.positions, pos, 1))
        return transfer(state, logits, i), i + 1

    def going_on(c):
        state, i = c
        row = (i < inp.steps) & (~has_threshold | jnp.any(open_masks(state.x), axis=1))
        return (i < w) & jnp.any(row)

    state, _ = jax.lax.while_loop(going_on, later, (state, jnp.int32(1)))
    return state.x, state.when, state.calls
