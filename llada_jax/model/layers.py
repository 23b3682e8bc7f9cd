"""The Block's building blocks shared by the dense and the MoE MLP: logical axis names, parameters
and the adapter-aware projection. The transformer, `model.mlp` and `model.moe` all import this
module, so none of them imports another for these names."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from llada_jax.model.adapters import ADAPTERS

# Logical axis names of the model's parameters and activations.
# `llada_jax.parallel.sharding.LOGICAL_RULES` maps each onto mesh axes.
VOCAB, EMBED, HEADS, KV_HEADS, HEAD_DIM, MLP, LAYERS, NORM = (
    "vocab", "embed", "heads", "kv_heads", "head_dim", "mlp", "layers", "norm")
ACT_BATCH, ACT_LENGTH, ACT_EMBED = "activation_batch", "activation_length", "activation_embed"


def param(module, name, shape, axes, init_std):
    """A normal(init_std) parameter of module.config.param_dtype with logical axes `axes`."""
    dtype = jnp.dtype(module.config.param_dtype)
    init = nn.with_logical_partitioning(nn.initializers.normal(init_std), axes)
    return module.param(name, init, shape, dtype)


def projection(module, name, spec, shape, axes, n_in=1):
    """The Block weight `name` (shape, logical axes; its first n_in axes are contracted) as a
    pure function x -> einsum(spec, x, W), plus the updates of the adapters that target it
    (`llada_jax.model.adapters.ADAPTERS`: LoRA when config.lora targets it). Every Block
    projection goes through here, so an adapter changes this one place."""
    w = param(module, name, shape, axes, module.config.init_std).astype(jnp.dtype(module.config.dtype))
    updates = [u for u in (make(module, name, spec, shape, axes, n_in) for make in ADAPTERS) if u is not None]

    def apply(x):
        y = jnp.einsum(spec, x, w)
        for update in updates:
            y = update(x, y)
        return y

    return apply


def project(module, name, x, spec, shape, axes, n_in=1):
    return projection(module, name, spec, shape, axes, n_in)(x)
