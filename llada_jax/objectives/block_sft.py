"""Block-diffusion SFT as LLaDA 2.x trains it: the prompt is never masked, the answer is
masked block by block (one t per block of `block_size` on the absolute grid, a block
that straddles the prompt's end masks only its answer part) and scored on the noisy half
of [x_t, x_0] under BD3-LM's mask (`block_diffusion`), normalised as SFT's
(CE / p / answer length, divided by B)."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax.numpy as jnp

from llada_jax.objectives import diffusion
from llada_jax.objectives.base import Objective
from llada_jax.objectives.block_diffusion import block_forward_process, noisy_half_logits


@dataclasses.dataclass(frozen=True)
class BlockSFT(Objective):
    name: ClassVar[str] = "block_sft"
    fields: ClassVar[tuple[str, ...]] = ("input_ids", "prompt_mask")
    blocks: ClassVar[bool] = True
    block_size: int = 0

    def noise(self, batch, rng, valid, *, mask_id, eps):
        return block_forward_process(rng, batch["input_ids"], mask_id, eps, self.block_size,
                                     prompt_mask=batch["prompt_mask"])

    def loss(self, forward, batch, noise, valid):
        noisy, masked, p_mask = noise
        ids, prompt_mask = batch["input_ids"], batch["prompt_mask"]
        logits = noisy_half_logits(forward, noisy, ids, self.block_size)
        loss, m = diffusion.sft_loss(logits, ids, masked, p_mask, prompt_mask)
        m["masked_prompt_tokens"] = jnp.sum(masked & prompt_mask)
        return loss, m


OBJECTIVE = BlockSFT()
