"""LLaDA (GSAI-ML/LLaDA-8B-Base and -Instruct, and our own exports): the bidirectional
LLaMA-style mask predictor of `llada_jax.model.transformer`, logits aligned with their
positions, in the published `model.transformer.*` Hugging Face layout
(`llada_jax.interop.layout`) with our PyTorch module as its modeling file."""

from __future__ import annotations

import os

from llada_jax.interop import layout
from llada_jax.model.transformer import LLaDA

SAMPLER = "llada"
HF_MODEL_TYPES = ("llada",)
HF_ARCHITECTURES = ("LLaDAModelLM",)
MODELING_FILES = {layout.MODELING_FILE: os.path.join(os.path.dirname(layout.__file__), "torch_model.py")}


def build(config):
    return LLaDA(config)


config_from_hf = layout.llada_config_from_hf
config_to_hf = layout.llada_config_to_hf
expected_shapes = layout.llada_expected_shapes
tensor_map = layout.llada_tensor_map


def peft_module(config, i, name):
    return f"{layout.PREFIX}blocks.{i}.{name}"
