"""The model config a run builds: `LLaDAConfig` from a run config's `model` (and `lora`)
section and the tokenizer's special ids. Training, RL, planning and the demo use it."""

from __future__ import annotations

import dataclasses

from llada_jax.config import with_model_defaults
from llada_jax.model.adapters import lora
from llada_jax.model.transformer import LLaDAConfig


def model_config(config, tokenizer) -> LLaDAConfig:
    """LLaDAConfig from config.model, its unset fields at llada_jax.config.MODEL_DEFAULTS (a
    training run has filled them first: training.inherit.resolve); special ids left at -1 come
    from the tokenizer (synthetic data: mask = vocab - 1, eos = pad = vocab - 2). With
    config.lora.rank > 0 the model gets those adapters and stores its (frozen) base as
    lora.base_dtype."""
    m = with_model_defaults(config).model.to_dict()
    v = m["vocab_size"]
    if tokenizer is not None:
        if tokenizer.vocab_size > v:
            raise ValueError(f"config.model.vocab_size={v}: expected >= {tokenizer.vocab_size}, the vocabulary of "
                             f"the tokenizer {tokenizer.path}; set --config.model.vocab_size={tokenizer.vocab_size}")
        defaults = {"mask_token_id": tokenizer.mask_id, "eos_token_id": tokenizer.eos_id,
                    "pad_token_id": tokenizer.eos_id}
    else:
        defaults = {"mask_token_id": v - 1, "eos_token_id": v - 2, "pad_token_id": v - 2}
    for k, val in defaults.items():
        if m[k] == -1:
            m[k] = val
    names = {f.name for f in dataclasses.fields(LLaDAConfig)}
    lc = config.get("lora")
    if lc is not None and lc.rank:
        m.update(lora=lora.from_config(lc), param_dtype=lc.base_dtype)
    return LLaDAConfig(**{k: val for k, val in m.items() if k in names})


def model_section(mcfg: LLaDAConfig) -> dict:
    """The run config's `model` fields of `mcfg` (dotted names, the inverse of `model_config`
    without LoRA): what an in-memory experiment hands to the run builder."""
    out = {}
    for f in dataclasses.fields(mcfg):
        value = getattr(mcfg, f.name)
        if f.name == "lora":  # the run's lora section
            continue
        if dataclasses.is_dataclass(value):
            out.update({f"{f.name}.{k}": v for k, v in dataclasses.asdict(value).items()})
        else:
            out[f.name] = value
    return out
