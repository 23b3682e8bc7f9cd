"""Pre-training: mask every token with probability p (one t per row), score the masked
ones with CE / p (the LLaDA paper's pre-training loss)."""

from __future__ import annotations

from llada_jax.objectives import diffusion
from llada_jax.objectives.base import Objective


class Pretrain(Objective):
    name = "pretrain"
    random_length = True

    def noise(self, batch, rng, valid, *, mask_id, eps):
        return diffusion.forward_process(rng, batch["input_ids"], mask_id, eps, valid_mask=valid)

    def loss(self, forward, batch, noise, valid):
        noisy, masked, p_mask = noise
        return diffusion.pretrain_loss(forward(noisy, valid), batch["input_ids"], masked, p_mask, valid)


OBJECTIVE = Pretrain()
