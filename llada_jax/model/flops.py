"""FLOPs accounting of the model: the FLOPs of one trained token and the device's measured
matmul peak, for MFU (the training loop's log), the FLOPs-matched baselines of the
experiments and `python -m llada_jax.plan`.

The count follows the usual convention (PaLM, appendix B; MaxText): 2 FLOPs per
multiply-accumulate of every matmul parameter, plus the attention scores and weighted
values, forward + backward = 3 x forward. Elementwise work (norms, activations, softmax)
and the embedding lookup are not counted.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp

from llada_jax.model.transformer import LLaDAConfig


def matmul_params(cfg: LLaDAConfig) -> int:
    """Parameters that take part in a matmul per token (the embedding lookup does not).
    MoE: the active ones, the router and num_experts_per_tok experts (plus the shared ones)
    of each MoE layer: what a token multiplies, whatever the dispatch computes."""
    e, h, kv, d, m = cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.mlp_hidden_size
    attn = e * h * d + 2 * e * kv * d + h * d * e
    moe = cfg.moe
    n_moe = cfg.n_layers - moe.first_k_dense if moe.enabled else 0
    expert = moe.expert_hidden_size or m
    moe_mlp = e * moe.num_experts + 3 * e * (moe.num_experts_per_tok * expert + moe.shared_hidden_size)
    return (cfg.n_layers * attn + (cfg.n_layers - n_moe) * 3 * e * m + n_moe * moe_mlp
            + e * cfg.embedding_size)  # + output head (tied or not)


def train_flops_per_token(cfg: LLaDAConfig, seq_len: int) -> float:
    """Model FLOPs per trained token: forward + backward = 3 x forward.

    Forward per token: 2 x matmul params, plus attention scores and weighted values over
    all `seq_len` keys (2 matmuls x 2 FLOPs x seq_len x n_heads x head_dim per layer).
    Attention is bidirectional, so nothing is halved as for a causal model.
    """
    attn = 4 * seq_len * cfg.n_heads * cfg.head_dim * cfg.n_layers
    return 3.0 * (2.0 * matmul_params(cfg) + attn)


def forward_flops(cfg: LLaDAConfig, queries: int, keys: int, outputs: int | None = None) -> float:
    """Model FLOPs of one forward pass of one row: `queries` tokens through the blocks,
    attending to `keys` keys each, and the output head on `outputs` of them (default all):
    what the samplers count per model call."""
    outputs = queries if outputs is None else outputs
    head = cfg.d_model * cfg.embedding_size
    attn = 4 * keys * cfg.n_heads * cfg.head_dim * cfg.n_layers
    return 2.0 * (matmul_params(cfg) - head) * queries + 2.0 * head * outputs + attn * queries


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
