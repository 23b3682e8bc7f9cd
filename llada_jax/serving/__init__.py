"""Serving: the continuous-batching engine (`engine`), its jitted block step (`block`) and
the OpenAI-compatible HTTP server (`server`, `python -m llada_jax.serve`)."""

from llada_jax.serving.engine import Engine, QueueFull, Request

__all__ = ["Engine", "QueueFull", "Request"]
