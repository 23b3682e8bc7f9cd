"""Llama (transformers' LlamaForCausalLM: Llama 2/3 shapes, default RoPE or Llama 3.1's rope_scaling).

An autoregressive checkpoint: imported with causal attention and shifted logits (the output
at i predicts token i + 1), it computes transformers' logits; with `causal=False` it is the
start of an AR-to-diffusion adaptation (configs/a2d.py) in the same layout."""

from __future__ import annotations

from llada_jax.model.families import causal_lm
from llada_jax.model.transformer import LLaDA

SAMPLER = "llada"
HF_MODEL_TYPES = ("llama",)
HF_ARCHITECTURES = ("LlamaForCausalLM",)
MODELING_FILES = {}  # transformers has the class
expected_shapes, tensor_map, peft_module = causal_lm.expected_shapes, causal_lm.tensor_map, causal_lm.peft_module


def build(config):
    return LLaDA(config)


def config_from_hf(hf, file="config.json", **overrides):
    return causal_lm.config_from_hf(hf, family="llama", qkv_bias=False, qk_norm=False, causal=True, file=file,
                                    **overrides)


def config_to_hf(config, torch_dtype="bfloat16"):
    return causal_lm.config_to_hf(config, model_type=HF_MODEL_TYPES[0], architectures=list(HF_ARCHITECTURES),
                                  torch_dtype=torch_dtype)
