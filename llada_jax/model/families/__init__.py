"""The registry of model families: one module per family in this package, one line in FAMILIES.

A family module defines, for configs whose `family` is its name:

    build(config) -> flax.linen.Module       the module (`apply({'params': p}, ids) -> logits`)
    SAMPLER                                  its default sampling rule ("llada" or "dream")
    HF_MODEL_TYPES                           the config.json `model_type`s it imports
    HF_ARCHITECTURES                         the config.json `architectures` it imports
    config_from_hf(hf, **overrides)          LLaDAConfig from a parsed config.json
    config_to_hf(config, torch_dtype)        config.json content of an export
    expected_shapes(config)                  Hugging Face tensor name -> shape ([out, in])
    tensor_map(config)                       (hf name, our path, layer or None, to_torch, from_torch)
                                             (a tuple of paths: one tensor of several leaves, `layout.is_fused`)
    MODELING_FILES                           {file name in an export: source file} (custom code)
    peft_module(config, i, name)             PEFT name of block i's projection `name`
    block_path(config, i, name)              (optional) our (path, index) of block i's `name`, None
                                             where block i lacks it; default `layout.block_path`'s

To add a family: write `llada_jax/model/families/NAME.py` with those names and add its line
below. Family modules are imported on first use (`get`), so this module imports nothing of
the model and the config can validate `family` against FAMILIES without an import cycle.
"""

from __future__ import annotations

import importlib
import types

FAMILIES = {
    "llada": "llada_jax.model.families.llada",
    "dream": "llada_jax.model.families.dream",
    "llama": "llada_jax.model.families.llama",
    "qwen2": "llada_jax.model.families.qwen2",
    "qwen3": "llada_jax.model.families.qwen3",
    "lladamoe": "llada_jax.model.families.lladamoe",
    "llada2": "llada_jax.model.families.llada2",
}


def get(name: str) -> types.ModuleType:
    """The family module of `name` (ValueError naming the known families)."""
    if name not in FAMILIES:
        raise ValueError(f"model family {name!r}: expected one of {', '.join(sorted(FAMILIES))}")
    return importlib.import_module(FAMILIES[name])


def build(config):
    """The Flax module of `config` for its family (config.family)."""
    return get(config.family).build(config)


def family_of_hf(hf: dict, file: str = "config.json") -> str:
    """The family a parsed config.json belongs to: its `architectures`, else its `model_type`
    (the published LLaDA-MoE config.json says model_type "llada", architectures LLaDAMoEModelLM).
    ValueError naming the file, the value and the known ones."""
    model_type, archs = hf.get("model_type"), hf.get("architectures") or []
    known_types, known_archs = {}, {}
    for name in FAMILIES:
        fam = get(name)
        known_types.update({t: name for t in fam.HF_MODEL_TYPES})
        known_archs.update({a: name for a in fam.HF_ARCHITECTURES})
    # A model_type none implements is refused even beside a known architecture (read as that
    # family it would be another model); a known one may differ from the architecture's family.
    if model_type is None or model_type in known_types:
        for arch in archs if isinstance(archs, list) else []:
            if arch in known_archs:
                return known_archs[arch]
        if model_type in known_types:
            return known_types[model_type]
    raise ValueError(f"{file}: model_type={model_type!r}, architectures={archs!r} is no known model family; "
                     f"expected model_type one of {', '.join(sorted(known_types))} "
                     f"(architectures one of {', '.join(sorted(known_archs))})")
