"""Adapters on the model's projections (LoRA, PEFT's definition, is the first)."""
