"""The interface every training objective implements (pretrain, SFT, the autoregressive
baseline, and RL objectives); `llada_jax.objectives.get(name)` returns one."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, ClassVar, NamedTuple


class Objective:
    """A training objective, stateless and hashable (it is part of a compiled step's key).

    The train step (`llada_jax.training.step`) calls, per optimizer step:
      noise = objective.noise(batch, rng, valid, mask_id=..., eps=...)   once for the whole batch,
      loss, metrics = objective.loss(forward, batch, noise, valid)        per (micro-)batch,
    where `noise` is any pytree with the batch as leading axis (split with the batch into
    micro-batches, so gradient accumulation gives the result of one big batch), `valid` is
    a (B, L) bool mask of non-padding positions or None, and
    `forward(ids_BxL, valid_BxL=None, *, next_token=False, positions=None, pattern=None) ->
    diffusion.ChunkedLogits` runs the model (LoRA, dropout and the chunked head are the step's
    business): position i scores token i, or with next_token=True (a causal model) the L - 1
    positions of which i scores token i + 1, from the outputs that saw tokens <= i, whatever
    the family's logit alignment; positions and an attention `Pattern` are for inputs such as
    BD3-LM's [x_t, x_0]. `metrics` must hold
    "masked_accuracy" and "num_masked" (the positions the loss scores).

    RL objectives (GRPO, VRPO; subclasses of `RLObjective` below) keep the same three methods, driven by
    `llada_jax.rl.step` instead, with two differences:
      noise = objective.noise(batch, rng, None, mask_id=..., eps=0.0)   leading axis: one
              entry per optimizer update on this batch (GRPO's mu; 1 for VRPO),
      consts = objective.reference(policy, reference, batch, noise_k)  per update k, once
              before any update: arrays from frozen policies (the rollout policy's and the
              reference's log-probs, VRPO's reference ELBOs), added to the batch,
      loss, metrics = objective.loss(policy, {**batch, **consts_k}, noise_k, None),
    where `policy` / `reference` are `Policy(model, params)` (the full parameter tree)
    rather than a forward function, as the Monte Carlo likelihood takes a model and params.
    Their settings (clip epsilon, beta, ...) are dataclass fields: the registry holds the
    defaults and the RL step uses `dataclasses.replace(objectives.get(name), ...)`.
    """

    name: ClassVar[str]
    fields: ClassVar[tuple[str, ...]] = ("input_ids",)  # the batch arrays (B, L) it reads
    random_length: ClassVar[bool] = False  # whether data.random_length_prob applies
    causal: ClassVar[bool] = False  # trains a causal model (config.causal), not a mask predictor
    rl: ClassVar[bool] = False  # an RL objective (see above): has `reference`, run by llada_jax.rl.step
    blocks: ClassVar[bool] = False  # block diffusion: a `block_size` field the train step sets from the model

    def noise(self, batch, rng, valid, *, mask_id: int, eps: float):
        return None

    def loss(self, forward: Callable, batch, noise, valid):
        raise NotImplementedError

    def reference(self, policy: "Policy", reference: "Policy", batch, noise) -> dict:
        return {}

    def __eq__(self, other):
        return type(self) is type(other)

    def __hash__(self):
        return hash(type(self))


class Policy(NamedTuple):
    """A model and its full parameter tree: what an RL objective scores sequences with."""

    model: Any
    params: Any


@dataclasses.dataclass(frozen=True)
class RLObjective(Objective):
    """The base of RL objectives (see Objective): settings as frozen dataclass fields."""

    rl: ClassVar[bool] = True
    prompt_len: int = 0  # the prompt's length: the tokens before it are never scored
    mask_id: int = 0
    beta: float = 0.0  # the weight of the reference term (KL for GRPO, DPO's beta for VRPO)
