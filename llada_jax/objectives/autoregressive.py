"""The autoregressive baseline (a causal model of the same shape, `config.causal=True`):
mean next-token cross-entropy over ids[:, 1:]; "masked_accuracy" is next-token accuracy."""

from __future__ import annotations

import jax.numpy as jnp

from llada_jax.objectives import diffusion
from llada_jax.objectives.base import Objective


class Autoregressive(Objective):
    name = "autoregressive"
    causal = True

    def loss(self, forward, batch, noise, valid):
        ids = batch["input_ids"]
        ce, correct = diffusion.token_stats(forward(ids[:, :-1]), ids[:, 1:])
        return jnp.mean(ce), {"masked_accuracy": jnp.mean(correct), "num_masked": jnp.int32(ce.size)}


OBJECTIVE = Autoregressive()
