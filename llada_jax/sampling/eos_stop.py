"""The end-of-answer rule of the sampler (`generate(eos_early_stop=...)`).

An instruct model pads its answer with EOS to the end of the generation (SFT
trains on that padding), so once a row's answer has ended, every later block would be revealed as EOS at the
cost of a full block of model calls. With the rule, a row is *finished* at the end of a
block when
- "block": the whole block was revealed as EOS, or
- "tail": the block ends in EOS (the answer's EOS run has reached the block's end;
  one block earlier than "block", and a heuristic for models whose EOS run never stops);
its masked positions right of the block are then set to EOS without model calls, and a
block where no row has a mask left makes no call at all. The result equals the sampler's
without the rule whenever the model would have revealed those positions as EOS anyway.

Pure functions of the token array; `llada_jax.sampling.sampler` calls them between blocks.
"""

from __future__ import annotations

import jax.numpy as jnp

EOS_EARLY_STOP = (None, "block", "tail")


def finished_rows(block_BxW, eos_id: int, rule: str):
    """(B,) bool: rows whose just-finished block (fully revealed) ends their answer."""
    if rule == "block":
        return jnp.all(block_BxW == eos_id, axis=1)
    if rule == "tail":
        return block_BxW[:, -1] == eos_id
    raise ValueError(f"eos_early_stop={rule!r}: expected one of {EOS_EARLY_STOP}")


def fill_after(x_BxL, when_BxL, finished_B, end, mask_id: int, eos_id: int, call):
    """Masked positions from `end` on of finished rows become EOS; their reveal step is
    `call` (the last model call, whose block finished the row). Returns (x, when)."""
    fill = finished_B[:, None] & (jnp.arange(x_BxL.shape[1]) >= end)[None, :] & (x_BxL == mask_id)
    return jnp.where(fill, eos_id, x_BxL), jnp.where(fill, call, when_BxL)
