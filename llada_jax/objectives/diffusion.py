"""The masked-diffusion objectives: forward process, pre-training and SFT losses, and the
Monte Carlo likelihood estimate (facts sections 3 to 5). Pure, jit-friendly functions."""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from llada_jax.model import lm_head


def forward_process(rng, input_ids, mask_id, eps=1e-3, prompt_mask=None, valid_mask=None):
    """Mask each token with probability p = (1 - eps) t + eps, one t ~ U[0, 1] per row.

    prompt_mask: (B, L) True on prompt positions, which are never masked (SFT).
    valid_mask: (B, L) False on padding positions (random-length batches), never masked.
    Returns (noisy_ids, masked, p_mask), the last two (B, L).
    """
    b, l = input_ids.shape
    t_rng, m_rng = jax.random.split(rng)
    t = jax.random.uniform(t_rng, (b,))
    p_mask = jnp.broadcast_to(((1.0 - eps) * t + eps)[:, None], (b, l))
    masked = jax.random.uniform(m_rng, (b, l)) < p_mask
    if prompt_mask is not None:
        masked = masked & ~prompt_mask.astype(bool)
    if valid_mask is not None:
        masked = masked & valid_mask.astype(bool)
    noisy_ids = jnp.where(masked, mask_id, input_ids)
    return noisy_ids, masked, p_mask


def token_cross_entropy(logits, targets):
    """Per-token cross-entropy in float32: (B, L, V), (B, L) -> (B, L)."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]


class ChunkedLogits(NamedTuple):
    """Logits not yet computed: `model.lm_head(hidden_BxLxE, head_ExV)`, what the model
    returns with `return_hidden=True`. The losses then apply the head `chunk` positions
    at a time under `jax.checkpoint`, so neither the (B, L, V) logits nor their gradient
    ever exist whole (10 GB in float32 for 5 x 4096 tokens over LLaDA's vocabulary)."""

    hidden_BxLxE: jax.Array
    head_ExV: jax.Array
    chunk: int = 128


def token_stats(logits, targets):
    """(cross-entropy, argmax == target) per token, both (B, L), from (B, L, V) logits
    or from `ChunkedLogits` (the same values, chunk by chunk)."""
    if not isinstance(logits, ChunkedLogits):
        return token_cross_entropy(logits, targets), jnp.argmax(logits, -1) == targets
    hidden, head, chunk = logits
    b, l, e = hidden.shape
    c = min(chunk, l)
    n = math.ceil(l / c)
    pad = n * c - l
    h_NxBxCxE = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0))).reshape(b, n, c, e).swapaxes(0, 1)
    t_NxBxC = jnp.pad(targets, ((0, 0), (0, pad))).reshape(b, n, c).swapaxes(0, 1)

    @jax.checkpoint  # the backward recomputes each chunk's logits instead of storing them
    def one(h_BxCxE, t_BxC):
        logits_BxCxV = lm_head(h_BxCxE, head)
        return token_cross_entropy(logits_BxCxV, t_BxC), jnp.argmax(logits_BxCxV, -1) == t_BxC

    ce, correct = jax.lax.map(lambda xs: one(*xs), (h_NxBxCxE, t_NxBxC))
    return ce.swapaxes(0, 1).reshape(b, n * c)[:, :l], correct.swapaxes(0, 1).reshape(b, n * c)[:, :l]


def _metrics(correct, masked):
    n = jnp.sum(masked)
    return {"masked_accuracy": jnp.sum(correct & masked) / jnp.maximum(n, 1), "num_masked": n}


def pretrain_loss(logits, input_ids, masked, p_mask, valid_mask=None):
    """sum over masked tokens of CE / p, divided by the number of token positions.

    logits: (B, L, V), or `ChunkedLogits` (the same loss without materialising them).
    With `valid_mask` (random-length batches padded to a fixed shape) only the valid
    positions count in the denominator, as if the batch had been cropped.
    """
    ce, correct = token_stats(logits, input_ids)
    total = jnp.sum(jnp.where(masked, ce / p_mask, 0.0))
    positions = input_ids.size if valid_mask is None else jnp.sum(valid_mask)
    loss = total / positions
    return loss, _metrics(correct, masked)


def sft_loss(logits, input_ids, masked, p_mask, prompt_mask):
    """sum over masked tokens of CE / p / answer_length(row), divided by B (facts section 4).
    logits: (B, L, V) or `ChunkedLogits`."""
    ce, correct = token_stats(logits, input_ids)
    answer_len = jnp.sum(~prompt_mask.astype(bool), axis=1, keepdims=True)
    per_token = ce / p_mask / jnp.maximum(answer_len, 1)
    loss = jnp.sum(jnp.where(masked, per_token, 0.0)) / input_ids.shape[0]
    return loss, _metrics(correct, masked)


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


def guided_logits(model, params, x, prompt_mask, cfg_scale, mask_id, attention_mask=None, *,
                  kv_cache=None, return_kv=False, **kw):
    """Logits with classifier-free guidance: the unconditional copy has every prompt
    position masked; `uncond + (cfg_scale + 1) * (cond - uncond)`. cfg_scale is static.

    Other keyword arrays (positions, output_positions) are per row and get doubled with
    the batch; a `kv_cache` must already hold both copies (2B rows, conditional first),
    as the one returned with `return_kv` does.
    """
    if cfg_scale > 0:
        x = jnp.concatenate([x, jnp.where(prompt_mask, mask_id, x)], axis=0)
        if attention_mask is not None:
            attention_mask = jnp.concatenate([attention_mask] * 2, axis=0)
        kw = {k: None if v is None else jnp.concatenate([v, v], axis=0) for k, v in kw.items()}
    out = model.apply({"params": params}, x, attention_mask, kv_cache=kv_cache, return_kv=return_kv, **kw)
    logits, kv = out if return_kv else (out, None)
    if cfg_scale > 0:
        cond, uncond = jnp.split(logits, 2, axis=0)
        logits = uncond + (cfg_scale + 1.0) * (cond - uncond)
    return (logits, kv) if return_kv else logits


@functools.partial(jax.jit, static_argnames=("model", "prompt_len", "batch_size", "num_batches",
                                             "cfg_scale", "mask_id"))
def _mc_losses(model, params, seq, rng, *, prompt_len, batch_size, num_batches, cfg_scale, mask_id):
    answer_len = seq.shape[0] - prompt_len
    seq_BxL = jnp.broadcast_to(seq, (batch_size, seq.shape[0]))
    prompt_mask = jnp.broadcast_to(jnp.arange(seq.shape[0]) < prompt_len, seq_BxL.shape)

    def one_batch(_, r):
        is_mask, num = stratified_mask(r, batch_size, prompt_len, answer_len)
        noisy = jnp.where(is_mask, mask_id, seq_BxL)
        logits = guided_logits(model, params, noisy, prompt_mask, cfg_scale, mask_id)
        ce = token_cross_entropy(logits, seq_BxL)
        weight = answer_len / num.astype(jnp.float32)  # 1 / p_mask with p_mask = l / L
        return None, jnp.sum(jnp.where(is_mask, ce * weight[:, None], 0.0)) / batch_size

    _, losses = jax.lax.scan(one_batch, None, jax.random.split(rng, num_batches))
    return losses


def log_likelihood(model, params, prompt, answer, *, rng, mc_num=128, batch_size=16, cfg_scale=0.0,
                   mask_id=None) -> float:
    """Monte Carlo estimate of log p(answer | prompt) (an ELBO; facts section 5).

    prompt, answer: 1-D token id sequences. Jitted once per (prompt, answer) shape.
    mask_id: default model.config.mask_token_id (the published id for a model without a
    config). Arguments are checked as `sampling.generate` checks them (ValueError).
    """
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
    seq = jnp.asarray(np.concatenate([prompt, answer]))
    losses = _mc_losses(model, params, seq, rng, prompt_len=int(prompt.size), batch_size=batch_size,
                        num_batches=mc_num // batch_size, cfg_scale=cfg_scale, mask_id=mask_id)
    return -float(jnp.mean(losses))
