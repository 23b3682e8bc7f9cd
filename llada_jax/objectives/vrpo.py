"""VRPO (LLaDA 1.5, Zhu et al. 2025): DPO where each log-likelihood is the masked-diffusion
ELBO estimate, with its variance reduction. Pure functions.

- Budget n, all of it on timesteps: n masks per sequence, each at its own noise level.
  The estimate is the project's one Monte Carlo likelihood (`likelihood.mc_nll`, the
  stratified-l form of the LLaDA paper's likelihood estimate: the n rows of one batch take n distinct numbers
  of masked tokens spread over 1..L, one mask each), not a copy of it.
- Antithetic sampling: the policy's and the reference's estimates of the same sequence
  get the same rng, hence the same timesteps and masks; their difference then cancels
  most of the mask noise.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

from llada_jax.objectives import likelihood
from llada_jax.objectives.base import RLObjective


def elbo(model, params, seqs_NxL, rngs_N, *, prompt_len: int, n: int, mask_id: int):
    """(N,) ELBO estimates of log p(answer | prompt) for each row, n masks each.
    rngs_N: one key per row; equal keys give equal masks (antithetic sampling)."""
    return -likelihood.mc_nll(model, params, seqs_NxL, rngs_N, prompt_len=prompt_len, batch_size=n, num_batches=1,
                              cfg_scale=0.0, mask_id=mask_id)


def pair_rngs(rng, num_pairs: int):
    """(chosen keys, rejected keys), one per pair: the masks of a step. The same keys go to
    the policy and to the reference (antithetic sampling)."""
    keys = jax.random.split(rng, 2 * num_pairs)
    return keys[:num_pairs], keys[num_pairs:]


def vrpo_loss(policy_chosen_N, policy_rejected_N, ref_chosen_N, ref_rejected_N, *, beta: float):
    """DPO on ELBO estimates: mean of -log sigmoid(beta [(B_pi(y_w) - B_ref(y_w)) -
    (B_pi(y_l) - B_ref(y_l))]). Returns (loss, metrics); reference terms get no gradient."""
    ref_w = jax.lax.stop_gradient(ref_chosen_N)
    ref_l = jax.lax.stop_gradient(ref_rejected_N)
    margin = beta * ((policy_chosen_N - ref_w) - (policy_rejected_N - ref_l))
    loss = -jnp.mean(jax.nn.log_sigmoid(margin))
    return loss, {"reward_margin": jnp.mean(margin), "reward_accuracy": jnp.mean(margin > 0)}


@dataclasses.dataclass(frozen=True)
class VRPO(RLObjective):
    """VRPO behind the objective interface (base.py, RL objectives). The batch: "chosen"
    and "rejected" (N, L) [prompt, answer] rows; the noise (one update per batch): the
    keys of each row's masks, the same for the policy and the reference (antithetic)."""

    name: ClassVar[str] = "vrpo"
    fields: ClassVar[tuple[str, ...]] = ("chosen", "rejected")
    n: int = 8
    beta: float = 0.1

    def elbos(self, policy, batch, noise):
        keys_w, keys_l = noise
        f = lambda seqs, keys: elbo(policy.model, policy.params, seqs, keys, prompt_len=self.prompt_len, n=self.n,
                                    mask_id=self.mask_id)
        return f(batch["chosen"], keys_w), f(batch["rejected"], keys_l)

    def noise(self, batch, rng, valid, *, mask_id=None, eps=None):
        return jax.tree_util.tree_map(lambda k: k[None], pair_rngs(rng, batch["chosen"].shape[0]))

    def reference(self, policy, reference, batch, noise):
        ref_w, ref_l = self.elbos(reference, batch, noise)
        return {"ref_chosen": ref_w, "ref_rejected": ref_l}

    def loss(self, policy, batch, noise, valid):
        return vrpo_loss(*self.elbos(policy, batch, noise), batch["ref_chosen"], batch["ref_rejected"], beta=self.beta)


OBJECTIVE = VRPO()
