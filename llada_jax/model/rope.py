"""RoPE's inverse frequencies, with the context-extension rescaling of the published
checkpoints that use one: Llama 3.1+'s "llama3" (transformers' `_compute_llama3_parameters`):
wavelengths longer than original_max_position_embeddings / low_freq_factor are divided by
`factor`, those shorter than original_max_position_embeddings / high_freq_factor are kept,
and the band between is interpolated. Its attention scaling is 1."""

from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp

ROPE_TYPES = ("default", "llama3")


@dataclasses.dataclass(frozen=True)
class RopeScaling:
    """config.json's `rope_scaling` (transformers 4) or `rope_parameters` (transformers 5)."""

    rope_type: str = "default"  # one of ROPE_TYPES; "default": no rescaling
    factor: float = 8.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192


def problems(s: RopeScaling) -> list[tuple[str, str]]:
    """(field, expected) for each field out of range; empty when `s` is valid."""
    out = []
    if s.rope_type not in ROPE_TYPES:
        out.append(("rope_type", f"one of {ROPE_TYPES}"))
    if s.rope_type == "llama3":
        if not s.factor >= 1:
            out.append(("factor", ">= 1"))
        if not 0 < s.low_freq_factor < s.high_freq_factor:
            out.append(("low_freq_factor", f"in (0, high_freq_factor={s.high_freq_factor})"))
        if not (isinstance(s.original_max_position_embeddings, int) and s.original_max_position_embeddings > 0):
            out.append(("original_max_position_embeddings", "a positive integer"))
    return out


def inv_freq(rotary_dim: int, theta: float, scaling: RopeScaling | None = None):
    """(rotary_dim // 2,) float32 inverse frequencies theta^(-2i / rotary_dim), rescaled."""
    freq = 1.0 / (theta ** (jnp.arange(0, rotary_dim, 2, dtype=jnp.float32) / rotary_dim))
    if scaling is None or scaling.rope_type == "default":
        return freq
    old = scaling.original_max_position_embeddings
    wavelen = 2 * math.pi / freq
    scaled = jnp.where(wavelen > old / scaling.low_freq_factor, freq / scaling.factor, freq)
    smooth = (old / wavelen - scaling.low_freq_factor) / (scaling.high_freq_factor - scaling.low_freq_factor)
    smoothed = (1 - smooth) * scaled / scaling.factor + smooth * scaled
    medium = (wavelen >= old / scaling.high_freq_factor) & (wavelen <= old / scaling.low_freq_factor)
    return jnp.where(medium, smoothed, scaled)


def require_default(scaling: RopeScaling, family: str) -> None:
    """ValueError when a family whose config.json has no RoPE rescaling is asked to carry one."""
    if scaling.rope_type != "default":
        raise ValueError(f"rope_scaling.rope_type={scaling.rope_type!r}: the {family} family's config.json "
                         "cannot express it; expected 'default'")
