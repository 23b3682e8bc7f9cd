"""VRPO (LLaDA 1.5, Zhu et al. 2025): DPO where each log-likelihood is the masked-diffusion
ELBO estimate, with its variance reduction. Pure functions.

- Budget n, all of it on timesteps: n masks per sequence, each at its own noise level.
  The estimate is the project's one Monte Carlo likelihood (`likelihood.mc_nll`, the
  stratified-l form of facts section 5: the n rows of one batch take n distinct numbers
  of masked tokens spread over 1..L, one mask each), not a copy of it.
- Antithetic sampling: the policy's and the reference's estimates of the same sequence
  get the same rng, hence the same timesteps and masks; their difference then cancels
  most of the mask noise.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from llada_jax.objectives import likelihood


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
