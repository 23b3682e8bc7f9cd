"""Adapters on the model's projections.

An adapter is a function (module, name, spec, shape, axes, n_in) -> None, or an update
(x, y) -> y' of the projection `y = einsum(spec, x, W)` of the Block weight `name`. The one
projection helper (`llada_jax.model.layers.projection`) applies every adapter of
ADAPTERS to every Block weight, so a new adapter is a module here plus one entry below.
LoRA (PEFT's definition, `lora.py`) is the first; each returns None where its config
does not target the weight.
"""

from llada_jax.model.adapters import lora

ADAPTERS = (lora.adapter,)
