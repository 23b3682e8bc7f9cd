"""Training metrics: FLOPs accounting for MFU, the device peak, and the log writers
(tensorboardX scalars and text, JSON lines in the workdir)."""

from __future__ import annotations

import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from llada_jax.model import LLaDAConfig


def matmul_params(cfg: LLaDAConfig) -> int:
    """Parameters that take part in a matmul per token (the embedding lookup does not)."""
    e, h, kv, d, m = cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.mlp_hidden_size
    per_layer = e * h * d + 2 * e * kv * d + h * d * e + 3 * e * m
    return cfg.n_layers * per_layer + e * cfg.embedding_size  # + output head (tied or not)


def train_flops_per_token(cfg: LLaDAConfig, seq_len: int) -> float:
    """Model FLOPs per trained token: forward + backward = 3 x forward.

    Forward per token: 2 x matmul params, plus attention scores and weighted values over
    all `seq_len` keys (2 matmuls x 2 FLOPs x seq_len x n_heads x head_dim per layer).
    Attention is bidirectional, so nothing is halved as for a causal model.
    """
    attn = 4 * seq_len * cfg.n_heads * cfg.head_dim * cfg.n_layers
    return 3.0 * (2.0 * matmul_params(cfg) + attn)


def measure_peak_flops(n: int = 1024, repeats: int = 5, dtype=jnp.float32) -> float:
    """Per-device matmul FLOP/s measured on the first device (best of `repeats`)."""
    x = jax.device_put(jnp.ones((n, n), dtype), jax.devices()[0])
    f = jax.jit(lambda a: a @ a)
    f(x).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        f(x).block_until_ready()
        best = min(best, time.perf_counter() - t)
    return 2.0 * n ** 3 / best


class Writer:
    """Scalars and texts to tensorboardX and `metrics.jsonl` (process 0 only)."""

    def __init__(self, workdir: str, enabled: bool = True):
        self.enabled = enabled
        self._tb = None
        self._jsonl = None
        if enabled:
            from tensorboardX import SummaryWriter

            os.makedirs(workdir, exist_ok=True)
            self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
            self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")

    def scalars(self, step: int, values: dict, prefix: str = "train"):
        if not self.enabled:
            return
        clean = {k: float(np.asarray(v)) for k, v in values.items()}
        for k, v in clean.items():
            self._tb.add_scalar(f"{prefix}/{k}", v, step)
        self._jsonl.write(json.dumps({"step": int(step), "split": prefix, **clean}) + "\n")
        self._jsonl.flush()

    def texts(self, step: int, texts: dict, prefix: str = "samples"):
        if not self.enabled:
            return
        for k, v in texts.items():
            self._tb.add_text(f"{prefix}/{k}", v, step)
        self._jsonl.write(json.dumps({"step": int(step), "split": prefix, **texts}) + "\n")
        self._jsonl.flush()

    def close(self):
        if self.enabled:
            self._tb.close()
            self._jsonl.close()


def read_jsonl(workdir: str, split: str = "train") -> list[dict]:
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [r for r in rows if r.get("split") == split]
