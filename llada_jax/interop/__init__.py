"""Interoperability with the published checkpoints: the Hugging Face layout and
safetensors io (`hf`), import (`import_hf`), export (`export`) and the standalone
PyTorch model shipped with an export (`torch_model`)."""
