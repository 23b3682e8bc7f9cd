"""The interface every training objective implements (pretrain, SFT, the autoregressive
baseline, and RL objectives); `llada_jax.objectives.get(name)` returns one."""

from __future__ import annotations

from typing import Callable, ClassVar


class Objective:
    """A training objective, stateless and hashable (it is part of a compiled step's key).

    The train step (`llada_jax.training.step`) calls, per optimizer step:
      noise = objective.noise(batch, rng, valid, mask_id=..., eps=...)   once for the whole batch,
      loss, metrics = objective.loss(forward, batch, noise, valid)        per (micro-)batch,
    where `noise` is any pytree with the batch as leading axis (split with the batch into
    micro-batches, so gradient accumulation gives the result of one big batch), `valid` is
    a (B, L) bool mask of non-padding positions or None, and
    `forward(ids_BxL, valid_BxL=None) -> diffusion.ChunkedLogits` runs the model (LoRA,
    dropout and the chunked head are the step's business). `metrics` must hold
    "masked_accuracy" and "num_masked" (the positions the loss scores).
    """

    name: ClassVar[str]
    fields: ClassVar[tuple[str, ...]] = ("input_ids",)  # the batch arrays (B, L) it reads
    random_length: ClassVar[bool] = False  # whether data.random_length_prob applies
    causal: ClassVar[bool] = False  # trains a causal model (config.causal), not a mask predictor

    def noise(self, batch, rng, valid, *, mask_id: int, eps: float):
        return None

    def loss(self, forward: Callable, batch, noise, valid):
        raise NotImplementedError

    def __eq__(self, other):
        return type(self) is type(other)

    def __hash__(self):
        return hash(type(self))
