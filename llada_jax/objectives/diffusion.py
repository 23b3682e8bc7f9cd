"""The masked-diffusion forward process and its weighted losses (the LLaDA paper's losses):
pre-training and SFT. Pure, jit-friendly functions; the objectives of the registry
(`pretrain`, `sft`) and the Monte Carlo likelihood (`likelihood`) build on them."""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from llada_jax.model import lm_head


EPS = 1e-3  # the smallest masking probability: p = (1 - EPS) t + EPS, as the reference trains


def forward_process(rng, input_ids, mask_id, eps=EPS, prompt_mask=None, valid_mask=None):
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
    ever exist whole (10 GB in float32 for 5 x 4096 tokens over LLaDA's vocabulary).
    chunk 0: the head over all positions at once, not rematerialised (small logits)."""

    hidden_BxLxE: jax.Array
    head_ExV: jax.Array
    chunk: int = 128


def token_stats(logits, targets):
    """(cross-entropy, argmax == target) per token, both (B, L), from (B, L, V) logits
    or from `ChunkedLogits` (the same values, chunk by chunk)."""
    if not isinstance(logits, ChunkedLogits):
        return token_cross_entropy(logits, targets), jnp.argmax(logits, -1) == targets
    hidden, head, chunk = logits
    if not chunk:
        return token_stats(lm_head(hidden, head), targets)
    b, l, e = hidden.shape
    c = min(chunk, l)
    n = math.ceil(l / c)
    pad = n * c - l
    h_UxBxCxE = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0))).reshape(b, n, c, e).swapaxes(0, 1)
    t_UxBxC = jnp.pad(targets, ((0, 0), (0, pad))).reshape(b, n, c).swapaxes(0, 1)

    @jax.checkpoint  # the backward recomputes each chunk's logits instead of storing them
    def one(h_BxCxE, t_BxC):
        logits_BxCxV = lm_head(h_BxCxE, head)
        return token_cross_entropy(logits_BxCxV, t_BxC), jnp.argmax(logits_BxCxV, -1) == t_BxC

    ce, correct = jax.lax.map(lambda xs: one(*xs), (h_UxBxCxE, t_UxBxC))
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
    """sum over masked tokens of CE / p / answer_length(row), divided by B (the LLaDA paper's SFT loss).
    logits: (B, L, V) or `ChunkedLogits`."""
    ce, correct = token_stats(logits, input_ids)
    answer_len = jnp.sum(~prompt_mask.astype(bool), axis=1, keepdims=True)
    per_token = ce / p_mask / jnp.maximum(answer_len, 1)
    loss = jnp.sum(jnp.where(masked, per_token, 0.0)) / input_ids.shape[0]
    return loss, _metrics(correct, masked)
