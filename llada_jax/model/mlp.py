"""The dense MLP of the Block (config.mlp "swiglu"), optionally over sequence chunks.

An MLP kind is a function (block, x_BxLxE) -> y_BxLxE that makes its parameters on the
Block (so LoRA, the Hugging Face layouts and the sharding rules see them at the block
level); `llada_jax.model.transformer.MLPS` names it."""

from __future__ import annotations

import jax

from llada_jax.model.layers import EMBED, MLP, projection


def sequence_chunked(fn, x_BxLxE, chunk: int):
    """A token-wise `fn` over x in sequence chunks of `chunk` tokens, each rematerialised:
    the backward pass then holds one chunk's intermediates (for the MLP, 3 x mlp_hidden_size
    values per token) instead of the whole sequence's. With `chunk` 0, or not dividing a
    longer L, one call. The values are those of fn(x): every token is computed alike."""
    b, l, e = x_BxLxE.shape
    if not chunk or l <= chunk or l % chunk:
        return fn(x_BxLxE)
    xs_UxBxCxE = x_BxLxE.reshape(b, l // chunk, chunk, e).swapaxes(0, 1)
    ys_UxBxCxE = jax.lax.map(jax.checkpoint(fn), xs_UxBxCxE)
    return ys_UxBxCxE.swapaxes(0, 1).reshape(b, l, ys_UxBxCxE.shape[-1])


def swiglu_mlp(block, m_BxLxE):
    """The dense SwiGLU MLP (config.mlp "swiglu"): ff_out(silu(ff_proj m) * up_proj m)."""
    cfg = block.config
    e, mlp = cfg.d_model, cfg.mlp_hidden_size
    gate = projection(block, "ff_proj", "ble,em->blm", (e, mlp), (EMBED, MLP))
    up = projection(block, "up_proj", "ble,em->blm", (e, mlp), (EMBED, MLP))
    down = projection(block, "ff_out", "blm,me->ble", (mlp, e), (MLP, EMBED))

    def ffn(m_BxCxE):
        return down(jax.nn.silu(gate(m_BxCxE)) * up(m_BxCxE))

    # LoRA dropout draws one mask per call: chunks would repeat it, so it runs unchunked.
    dropout = cfg.lora.dropout > 0 and block.has_rng("dropout")
    return sequence_chunked(ffn, m_BxLxE, 0 if dropout else cfg.mlp_chunk)
