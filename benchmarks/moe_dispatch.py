"""MoE token dispatch on this machine: one JSON line per (expert count, dispatch).

    python benchmarks/moe_dispatch.py [--tokens=2048] [--d_model=512] [--repeats=3]

For each (num_experts, num_experts_per_tok, expert width) the routed experts of one MoE MLP
(`llada_jax.model.moe.experts_apply`, forward + backward, jitted) run with both dispatches:
"ragged" (tokens sorted by expert, `jax.lax.ragged_dot` grouped matmuls) and "dense" (every
expert on every token). Figures: best step time and the active matmul FLOP/s (2 x 3 x 3 x
tokens x k x d_model x width: forward + backward of three matmuls per chosen expert), the
work a token needs whatever the dispatch computes.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from llada_jax.model import moe  # noqa: E402

SHAPES = ((4, 2, 768), (8, 2, 768), (16, 4, 384), (64, 8, 192))  # (experts, per token, width)


def bench(x, k, width, dispatch, tokens, d, repeats):
    rng = np.random.default_rng(0)
    xs = jnp.asarray(rng.normal(size=(tokens, d)), jnp.float32)
    gate, up = (jnp.asarray(0.02 * rng.normal(size=(x, d, width)), jnp.float32) for _ in range(2))
    down = jnp.asarray(0.02 * rng.normal(size=(x, width, d)), jnp.float32)
    m = moe.MoEConfig(num_experts=x, num_experts_per_tok=k)
    router = jnp.asarray(rng.normal(size=(d, x)), jnp.float32)

    def loss(xs, gate, up, down):
        w, idx, _ = moe.route(xs @ router, m)
        return jnp.sum(moe.experts_apply(xs, w, idx, gate, up, down, dispatch) ** 2)

    fn = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3)))
    jax.block_until_ready(fn(xs, gate, up, down))
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(xs, gate, up, down))
        best = min(best, time.perf_counter() - t)
    active = 2 * 3 * 3 * tokens * k * d * width
    return {"figure": "moe_dispatch", "device": str(jax.devices()[0]), "dispatch": dispatch, "num_experts": x,
            "num_experts_per_tok": k, "expert_hidden_size": width, "tokens": tokens, "d_model": d,
            "step_s": round(best, 4), "active_gflops_per_s": round(active / best / 1e9, 2)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=2048)
    ap.add_argument("--d_model", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    for x, k, width in SHAPES:
        for dispatch in moe.DISPATCH:
            print(json.dumps(bench(x, k, width, dispatch, a.tokens, a.d_model, a.repeats)), flush=True)


if __name__ == "__main__":
    main()
