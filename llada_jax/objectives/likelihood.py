"""The one Monte Carlo likelihood of a masked diffusion model (the LLaDA paper's likelihood estimate).

log p(y | x) >= E_{l, mask} [ -sum over masked answer positions of CE / p_mask ], with
p_mask the masking probability of the sample. `masked_nll` is one sample of the
bracket per row, for masks the caller draws (so an estimator can share them between
two models or two policies, e.g. VRPO's antithetic pairs); `stratified_mask` draws the
reference's masks (a stratified number l of masked answer positions, p_mask = l / L);
`mc_nll` averages many such samples for a batch of sequences, as `log_likelihood`
(objectives.diffusion) and lm-eval's `loglikelihood` (evaluation.harness) use it.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from llada_jax.objectives.diffusion import token_cross_entropy
from llada_jax.sampling.guidance import guided_logits


def stratified_mask(rng, batch_size, prompt_len, answer_len):
    """Masks with exactly l answer positions masked, l stratified across the batch.

    l_i = ((round(k + i * L / b) - 1) mod L) + 1 from one random k in 1..L, as the
    reference does; the l positions of each row are chosen uniformly.
    Returns (is_mask (b, prompt_len + answer_len), l (b,)).
    """
    k_rng, perm_rng = jax.random.split(rng)
    k = jax.random.randint(k_rng, (), 1, answer_len + 1)
    # The reference uses torch.linspace in float32 then round-half-to-even.
    x = jnp.round(k.astype(jnp.float32) + jnp.arange(batch_size, dtype=jnp.float32) * (answer_len / batch_size))
    num = ((x.astype(jnp.int32) - 1) % answer_len) + 1
    # rank of each position in a random permutation; the l lowest ranks are masked
    ranks = jnp.argsort(jnp.argsort(jax.random.uniform(perm_rng, (batch_size, answer_len)), axis=1), axis=1)
    answer_mask = ranks < num[:, None]
    is_mask = jnp.concatenate([jnp.zeros((batch_size, prompt_len), bool), answer_mask], axis=1)
    return is_mask, num


def masked_nll(model, params, ids_BxL, masked_BxL, inv_p_mask_B, *, mask_id, prompt_mask_BxL=None,
               cfg_scale=0.0):
    """One Monte Carlo sample of -ELBO per row, (B,): sum over masked positions of
    CE(model(ids with `masked_BxL` set to mask_id), ids) / p_mask.

    inv_p_mask_B: 1 / p_mask of each row's sample (L / l for `stratified_mask`).
    prompt_mask_BxL: the prompt positions (never in `masked_BxL`); needed with cfg_scale > 0,
      whose unconditional copy masks them. Differentiable in params (a policy's log-prob).
    """
    noisy_BxL = jnp.where(masked_BxL, mask_id, ids_BxL)
    logits_BxLxV = guided_logits(model, params, noisy_BxL, prompt_mask_BxL, cfg_scale, mask_id)
    ce_BxL = token_cross_entropy(logits_BxLxV, ids_BxL)
    return jnp.sum(jnp.where(masked_BxL, ce_BxL * inv_p_mask_B[:, None], 0.0), axis=1)


@functools.partial(jax.jit, static_argnames=("model", "prompt_len", "batch_size", "num_batches",
                                             "cfg_scale", "mask_id"))
def mc_nll(model, params, seqs_NxL, keys_N, *, prompt_len, batch_size, num_batches, cfg_scale, mask_id):
    """Monte Carlo estimate of -log p(answer | prompt) (an ELBO) of N sequences sharing a
    shape, (N,): `num_batches` batches of `batch_size` stratified masks each, all N in one
    forward pass of N * batch_size rows per batch. Sequence i draws its masks from keys_N[i]
    alone, so its estimate does not depend on which others share the call."""
    n, l = seqs_NxL.shape
    answer_len = l - prompt_len
    rows = jnp.repeat(seqs_NxL, batch_size, axis=0)  # sequence-major: (N * bs, L)
    prompt_mask = jnp.broadcast_to(jnp.arange(l) < prompt_len, rows.shape)
    keys = jax.vmap(lambda k: jax.random.split(k, num_batches))(keys_N)  # (N, nb, 2)

    def one_batch(_, ks):
        is_mask, num = jax.vmap(lambda k: stratified_mask(k, batch_size, prompt_len, answer_len))(ks)
        is_mask, num = is_mask.reshape(n * batch_size, l), num.reshape(-1)
        weight = answer_len / num.astype(jnp.float32)  # 1 / p_mask with p_mask = l / L
        per_row = masked_nll(model, params, rows, is_mask, weight, mask_id=mask_id, prompt_mask_BxL=prompt_mask,
                             cfg_scale=cfg_scale)
        return None, jnp.sum(per_row.reshape(n, batch_size), axis=1) / batch_size

    _, losses = jax.lax.scan(one_batch, None, jnp.swapaxes(keys, 0, 1))  # (nb, N)
    return jnp.mean(losses, axis=0)


def log_likelihood(model, params, prompt, answer, *, rng, mc_num=128, batch_size=16, cfg_scale=0.0,
                   mask_id=None) -> float:
    """Monte Carlo estimate of log p(answer | prompt) (an ELBO; the LLaDA paper's likelihood estimate).

    prompt, answer: 1-D token id sequences. Jitted once per (prompt, answer) shape.
    mask_id: default model.config.mask_token_id (the published id for a model without a
    config). Arguments are checked as `sampling.generate` checks them (ValueError).
    """
    prompt, answer, rng, mc_num, batch_size, cfg_scale, mask_id = _validate(model, prompt, answer, rng, mc_num,
                                                                            batch_size, cfg_scale, mask_id)
    seq = jnp.asarray(np.concatenate([prompt, answer]))
    nll_N = mc_nll(model, params, seq[None], jnp.asarray(rng)[None], prompt_len=int(prompt.size), batch_size=batch_size,
                   num_batches=mc_num // batch_size, cfg_scale=cfg_scale, mask_id=mask_id)
    return -float(nll_N[0])


def _validate(model, prompt, answer, rng, mc_num, batch_size, cfg_scale, mask_id):
    """log_likelihood's validator (ValueError naming the value, before any work), built from
    `llada_jax.validation`'s helpers as `sampling.sampler._validate` is for generate."""
    from llada_jax import validation

    where, config = "log_likelihood", getattr(model, "config", None)
    vocab = validation.vocab_of(model)
    mask_id = validation.token_id(where, "mask_id", validation.special_ids(model, mask_id)[0], vocab)
    prompt = validation.token_ids(where, "prompt", prompt, vocab, ndim=1)
    answer = validation.token_ids(where, "answer", answer, vocab, ndim=1)
    if answer.size == 0:
        raise ValueError("log_likelihood: answer is empty; expected at least one token")
    if config is not None and prompt.size + answer.size > config.max_sequence_length:
        validation.bad(where, "len(prompt) + len(answer)", prompt.size + answer.size,
                       f"<= max_sequence_length={config.max_sequence_length}")
    mc_num = validation.integer(where, "mc_num", mc_num, minimum=1)
    batch_size = validation.integer(where, "batch_size", batch_size, minimum=1)
    if mc_num % batch_size:
        raise ValueError(f"log_likelihood: mc_num={mc_num} must be a multiple of batch_size={batch_size}")
    cfg_scale = validation.number(where, "cfg_scale", cfg_scale, minimum=0)
    rng = validation.rng_key(where, "rng", rng)
    return prompt, answer, rng, mc_num, batch_size, cfg_scale, mask_id
