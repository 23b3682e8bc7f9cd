"""Logit alignment: which token the model's output at position i predicts.

- "same" (LLaDA, LLaDA-MoE): the output at i predicts token i.
- "shifted" (Dream, and every autoregressive checkpoint: Llama, Qwen2, Qwen3): the output
  at i predicts token i + 1; the prediction for token i is read at i - 1 (and at 0 for
  position 0), as Dream's sampler does with `cat([logits[:, :1], logits[:, :-1]], 1)`.

The model applies `to_targets` (or `source_positions` when only some positions' logits
are asked for) to its final hidden states, so every reader of logits (losses, the Monte
Carlo likelihood, the samplers, guidance, RL log-probabilities, the lm-eval adapter) gets
logits whose position i scores token i, whatever the family.
"""

from __future__ import annotations

import jax.numpy as jnp

ALIGNMENTS = ("same", "shifted")


def to_targets(x_BxLx, alignment: str):
    """Per-position outputs (B, L, ...) re-indexed so that [:, i] is the prediction of token i."""
    if alignment == "same":
        return x_BxLx
    if alignment == "shifted":
        return jnp.concatenate([x_BxLx[:, :1], x_BxLx[:, :-1]], axis=1)
    raise ValueError(f"logit_alignment={alignment!r}: expected one of {ALIGNMENTS}")


def source_positions(positions_BxM, alignment: str):
    """The output positions that predict the tokens at `positions_BxM`."""
    if alignment == "same":
        return positions_BxM
    if alignment == "shifted":
        return jnp.maximum(positions_BxM - 1, 0)
    raise ValueError(f"logit_alignment={alignment!r}: expected one of {ALIGNMENTS}")


def next_token_view(x_BxLx, alignment: str):
    """The L - 1 outputs of a causal model that predict tokens 1 .. L - 1, [:, i] from the
    output that saw tokens <= i: the first L - 1 under "same" (the output at i is trained as
    the prediction of token i + 1), the last L - 1 of the re-indexed ones under "shifted"."""
    if alignment == "same":
        return x_BxLx[:, :-1]
    if alignment == "shifted":
        return x_BxLx[:, 1:]
    raise ValueError(f"logit_alignment={alignment!r}: expected one of {ALIGNMENTS}")
