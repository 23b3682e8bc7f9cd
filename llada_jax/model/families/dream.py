"""Dream (Dream-org/Dream-v0-Base-7B and -Instruct-7B): the Qwen2 block (biases on q/k/v,
grouped-query attention, RoPE theta from its config) without the causal mask, and shifted
logits (the output at i predicts token i + 1, as the Qwen2.5 it starts from). Its
sampler is Dream's `diffusion_generate` (`llada_jax.sampling.dream`). Layout: transformers'
Qwen2 names (`model.layers.*`, `lm_head`), config.json `model_type` "Dream" with the
`mask_token_id`. An export ships our PyTorch code as `modeling_dream.py`
(`llada_jax.interop.torch_families`: `DreamConfig`, `DreamModel`, the published class names), so
`AutoModel.from_pretrained(export, trust_remote_code=True)` loads it."""

from __future__ import annotations

from llada_jax.interop import layout
from llada_jax.model.families import causal_lm
from llada_jax.model.transformer import LLaDA

SAMPLER = "dream"
HF_MODEL_TYPES = ("Dream",)
HF_ARCHITECTURES = ("DreamModel",)
MODELING_FILES = {"modeling_dream.py": layout.FAMILIES_MODELING_SOURCE}
AUTO_MAP = {"AutoConfig": "modeling_dream.DreamConfig", "AutoModel": "modeling_dream.DreamModel"}
expected_shapes, tensor_map, peft_module = causal_lm.expected_shapes, causal_lm.tensor_map, causal_lm.peft_module


def build(config):
    return LLaDA(config)


def config_from_hf(hf, file="config.json", **overrides):
    if hf.get("mask_token_id") is None and "mask_token_id" not in overrides:
        raise ValueError(f"{file} is missing mask_token_id: expected Dream's (151666 for Dream-v0-7B)")
    return causal_lm.config_from_hf(hf, family="dream", qkv_bias=True, qk_norm=False, causal=False, file=file,
                                    **overrides)


def config_to_hf(config, torch_dtype="bfloat16"):
    return causal_lm.config_to_hf(config, model_type="Dream", architectures=list(HF_ARCHITECTURES),
                                  torch_dtype=torch_dtype,
                                  extra=dict(auto_map=dict(AUTO_MAP), mask_token_id=config.mask_token_id,
                                             use_sliding_window=False, sliding_window=None,
                                             **({} if config.rope_scaling.rope_type != "default"
                                                else {"rope_scaling": None})))
