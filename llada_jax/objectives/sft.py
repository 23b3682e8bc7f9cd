"""Supervised fine-tuning: the prompt is never masked; the answer's masked tokens are
scored with CE / p / answer length (the LLaDA paper's SFT loss)."""

from __future__ import annotations

import jax.numpy as jnp

from llada_jax.objectives import diffusion
from llada_jax.objectives.base import Objective


class SFT(Objective):
    name = "sft"
    fields = ("input_ids", "prompt_mask")

    def noise(self, batch, rng, valid, *, mask_id, eps):
        return diffusion.forward_process(rng, batch["input_ids"], mask_id, eps, prompt_mask=batch["prompt_mask"],
                                         valid_mask=valid)

    def loss(self, forward, batch, noise, valid):
        noisy, masked, p_mask = noise
        prompt_mask = batch["prompt_mask"]
        loss, m = diffusion.sft_loss(forward(noisy, valid), batch["input_ids"], masked, p_mask, prompt_mask)
        m["masked_prompt_tokens"] = jnp.sum(masked & prompt_mask)
        return loss, m


OBJECTIVE = SFT()
