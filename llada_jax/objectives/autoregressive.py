"""The autoregressive objective: mean next-token cross-entropy over ids[:, 1:], for a
causal model (`config.causal=True`): LLaDA's AR baseline of the same shape, or an
autoregressive checkpoint (Llama, Qwen) trained on as one. "masked_accuracy" is next-token
accuracy."""

from __future__ import annotations

import jax.numpy as jnp

from llada_jax.objectives import diffusion
from llada_jax.objectives.base import Objective


class Autoregressive(Objective):
    name = "autoregressive"
    causal = True

    def loss(self, forward, batch, noise, valid):
        ids = batch["input_ids"]
        ce, correct = diffusion.token_stats(forward(ids, next_token=True), ids[:, 1:])
        return jnp.mean(ce), {"masked_accuracy": jnp.mean(correct), "num_masked": jnp.int32(ce.size)}


OBJECTIVE = Autoregressive()
