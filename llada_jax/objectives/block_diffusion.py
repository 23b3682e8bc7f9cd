"""Block diffusion (BD3-LM, Arriola et al. 2025; kuleshov-group/bd3lms `diffusion.py`):
the sequence is cut into blocks of `block_size` (the model's `config.block_size`), each
block of x_t gets its own t, and the model sees x_t and the clean x_0 concatenated (2L
tokens, RoPE positions 0..L-1 twice) under BD3-LM's mask (`attention.block_diffusion`):
a noisy block sees itself and the clean blocks before it. The loss is the 1/t-weighted
masked cross-entropy on the noisy half, normalised as pre-training's (sum over masked
tokens of CE / p over the L positions): with block_size = L it is LLaDA's pre-training
loss exactly; with block_size 1 each token is predicted from the clean tokens before it
(an autoregressive loss, weighted by 1/p).

A block-causal model (block_size > 0) samples with the exact block KV cache
(`llada_jax.sampling.block_cache`).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

from llada_jax.model import attention
from llada_jax.objectives import diffusion
from llada_jax.objectives.base import Objective


def block_forward_process(rng, input_ids, mask_id, eps, block_size, prompt_mask=None):
    """Mask each token with probability p = (1 - eps) t + eps, one t ~ U[0, 1] per block of
    `block_size` tokens of each row (the same draws as `diffusion.forward_process` when the
    block is the whole row). prompt_mask: (B, L) True where never masked (SFT).
    Returns (noisy_ids, masked, p_mask), the last two (B, L)."""
    b, l = input_ids.shape
    if l % block_size:
        raise ValueError(f"block diffusion: block_size={block_size} must divide the sequence length {l}")
    t_rng, m_rng = jax.random.split(rng)
    t = jax.random.uniform(t_rng, (b, l // block_size))
    p_mask = jnp.repeat((1.0 - eps) * t + eps, block_size, axis=1)
    masked = jax.random.uniform(m_rng, (b, l)) < p_mask
    if prompt_mask is not None:
        masked = masked & ~prompt_mask.astype(bool)
    return jnp.where(masked, mask_id, input_ids), masked, p_mask


def noisy_half_logits(forward, noisy_BxL, clean_BxL, block_size):
    """The model's `ChunkedLogits` of the noisy half of [x_t, x_0] under BD3-LM's mask."""
    b, l = noisy_BxL.shape
    positions = jnp.broadcast_to(jnp.tile(jnp.arange(l, dtype=jnp.int32), 2), (b, 2 * l))
    out = forward(jnp.concatenate([noisy_BxL, clean_BxL], axis=1), None, positions=positions,
                  pattern=attention.block_diffusion(l, block_size))
    return diffusion.ChunkedLogits(out.hidden_BxLxE[:, :l], out.head_ExV, out.chunk)


@dataclasses.dataclass(frozen=True)
class BlockDiffusion(Objective):
    name: ClassVar[str] = "block_diffusion"
    blocks: ClassVar[bool] = True  # trains a block-causal model: needs model.block_size > 0
    block_size: int = 0  # set by the train step from model.config.block_size (or its warm-up)

    def noise(self, batch, rng, valid, *, mask_id, eps):
        return block_forward_process(rng, batch["input_ids"], mask_id, eps, self.block_size)

    def loss(self, forward, batch, noise, valid):
        noisy, masked, p_mask = noise
        ids = batch["input_ids"]
        return diffusion.pretrain_loss(noisy_half_logits(forward, noisy, ids, self.block_size), ids, masked, p_mask)


OBJECTIVE = BlockDiffusion()
