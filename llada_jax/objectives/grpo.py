"""diffu-GRPO (d1, Zhao et al. 2025): the per-token log-probability estimate of a
masked diffusion model and the clipped GRPO loss with a k3 KL penalty. Pure functions.

The estimate (d1 `diffu_grpo_trainer.py`): one forward pass over [prompt, completion]
with EVERY completion token masked and each prompt token masked independently with
probability `p_mask_prompt`; log p(token) is read from the logits at its own position.
The prompt mask is redrawn at each of the mu inner updates; the rollout policy's and the
reference's estimates use the same mask as the update they are compared with.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

from llada_jax.objectives.base import RLObjective


def group_advantages(rewards_N, num_generations: int, scale_rewards: bool = False):
    """Group-normalised advantages: reward minus its group's mean, divided by the group's
    (unbiased, as torch.std) standard deviation + 1e-4 when `scale_rewards` (d1's flag;
    its default is False). rewards_N: the N = B * G rewards, each group of G contiguous."""
    r_BxG = rewards_N.reshape(-1, num_generations).astype(jnp.float32)
    adv_BxG = r_BxG - jnp.mean(r_BxG, axis=1, keepdims=True)
    if scale_rewards:
        adv_BxG = adv_BxG / (jnp.std(r_BxG, axis=1, ddof=1, keepdims=True) + 1e-4)
    return adv_BxG.reshape(-1)


def d1_mask(rng, ids_NxL, prompt_len: int, p_mask_prompt: float, mask_id: int):
    """d1's input for the log-probability pass: the completion (positions >= prompt_len)
    all masked, each prompt token masked with probability p_mask_prompt."""
    n, l = ids_NxL.shape
    is_prompt = jnp.arange(l) < prompt_len
    masked_NxL = (jax.random.uniform(rng, (n, l)) < p_mask_prompt) | ~is_prompt
    return jnp.where(masked_NxL, mask_id, ids_NxL)


def token_logps(logits_NxLxV, ids_NxL):
    """log softmax(logits)[token] at every position, float32 (N, L)."""
    logp = jax.nn.log_softmax(logits_NxLxV.astype(jnp.float32), axis=-1)
    return jnp.take_along_axis(logp, ids_NxL[..., None], axis=-1)[..., 0]


def completion_logps(apply_fn, params, ids_NxL, rng, *, prompt_len: int, p_mask_prompt: float, mask_id: int):
    """The d1 estimate: (N, C) log-probabilities of the C = L - prompt_len completion tokens.
    apply_fn(params, noisy_ids) -> (N, L, V) logits."""
    noisy = d1_mask(rng, ids_NxL, prompt_len, p_mask_prompt, mask_id)
    return token_logps(apply_fn(params, noisy), ids_NxL)[:, prompt_len:]


def grpo_loss(logp_NxA, old_logp_NxA, ref_logp_NxA, advantages_N, completion_mask_NxA, *, epsilon: float,
              beta: float):
    """The clipped surrogate plus beta * k3 KL, averaged over the completion tokens of the
    batch (d1: sum(per_token * mask) / sum(mask)). Returns (loss, metrics).

    per token: -min(r A, clip(r, 1 - eps, 1 + eps) A) + beta (exp(ref - new) - (ref - new) - 1),
    r = exp(new - old); old and ref are constants (no gradient flows into them).
    """
    old = jax.lax.stop_gradient(old_logp_NxA)
    ref = jax.lax.stop_gradient(ref_logp_NxA)
    adv = advantages_N[:, None]
    ratio = jnp.exp(logp_NxA - old)
    clipped = jnp.clip(ratio, 1.0 - epsilon, 1.0 + epsilon)
    per_token = -jnp.minimum(ratio * adv, clipped * adv)
    delta = ref - logp_NxA
    kl = jnp.exp(delta) - delta - 1.0
    if beta:
        per_token = per_token + beta * kl
    mask = completion_mask_NxA.astype(jnp.float32)
    denom = jnp.maximum(jnp.sum(mask), 1.0)
    loss = jnp.sum(per_token * mask) / denom
    is_clipped = (ratio * adv) > (clipped * adv)  # the clipped branch is the minimum
    metrics = {"kl": jnp.sum(kl * mask) / denom, "clip_fraction": jnp.sum(is_clipped * mask) / denom}
    return loss, metrics


@dataclasses.dataclass(frozen=True)
class GRPO(RLObjective):
    """diffu-GRPO behind the objective interface (base.py, RL objectives). The batch:
    "input_ids" (N, L) rollouts, "advantages" (N,), "completion_mask" (N, C); the noise is
    one prompt-mask key per inner update (mu = num_iterations), shared by the new, the
    rollout-time ("old") and the reference log-probabilities of that update."""

    name: ClassVar[str] = "grpo"
    fields: ClassVar[tuple[str, ...]] = ("input_ids", "advantages", "completion_mask")
    num_iterations: int = 1
    p_mask_prompt: float = 0.15
    epsilon: float = 0.2
    beta: float = 0.04

    def logps(self, policy, ids_NxL, rng):
        return completion_logps(lambda p, x: policy.model.apply({"params": p}, x), policy.params, ids_NxL, rng,
                                prompt_len=self.prompt_len, p_mask_prompt=self.p_mask_prompt, mask_id=self.mask_id)

    def noise(self, batch, rng, valid, *, mask_id=None, eps=None):
        return jax.random.split(rng, self.num_iterations)

    def reference(self, policy, reference, batch, noise):
        old = self.logps(policy, batch["input_ids"], noise)
        return {"old_logp": old, "ref_logp": self.logps(reference, batch["input_ids"], noise) if self.beta else old}

    def loss(self, policy, batch, noise, valid):
        return grpo_loss(self.logps(policy, batch["input_ids"], noise), batch["old_logp"], batch["ref_logp"],
                         batch["advantages"], batch["completion_mask"], epsilon=self.epsilon, beta=self.beta)


OBJECTIVE = GRPO()
