"""The train step's matmuls alone, XLA:CPU against PyTorch's CPU BLAS, one JSON line per
shape and width: is the gap of `benchmarks/train.py --torch` the matmuls or the rest?

    python benchmarks/matmul.py [--d_model 512,1024] [--tokens 512] [--repeats 5]
    XLA_FLAGS=--xla_cpu_use_onednn=true python benchmarks/matmul.py   # an XLA:CPU flag's effect

For the model of benchmarks/train.py (4 layers, vocabulary 8192, MLP 3 x d_model, float32)
at `--tokens` tokens a step, every (M, K) x (K, N) product of the forward pass and both of
its backward products (dX = dY W^T, dW = X^T dY): q/k/v/o, gate/up, down and the output
head. Each line: the shape, how often the step computes it, the median seconds of one
product in JAX (jit of one `jnp.dot`) and in PyTorch (`torch.mm`, --threads threads),
GFLOP/s of each, and their ratio. A last line per width sums them as the step computes them.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np


def _median_time(fn, repeats, inner=5):
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(inner):
            fn()
        times.append((time.perf_counter() - t) / inner)
    return float(np.median(times))


def shapes(d, tokens, layers=4, vocab=8192):
    """{(M, K, N): count} of the train step's matmuls (forward and backward)."""
    out = {}

    def add(m, k, n, count):
        for s in ((m, k, n), (m, n, k), (k, m, n)):  # forward, dX = dY W^T, dW = X^T dY
            out[s] = out.get(s, 0) + count
    add(tokens, d, d, 4 * layers)  # q, k, v, o
    add(tokens, d, 3 * d, 2 * layers)  # gate, up
    add(tokens, 3 * d, d, layers)  # down
    add(tokens, d, vocab, 1)  # output head
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--d_model", default="512,1024")
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import jax
    import jax.numpy as jnp
    import torch

    torch.set_num_threads(args.threads)
    flags = os.environ.get("XLA_FLAGS", "")
    for d in (int(x) for x in args.d_model.split(",")):
        total_j = total_t = 0.0
        for (m, k, n), count in shapes(d, args.tokens).items():
            rng = np.random.default_rng(0)
            a, b = rng.standard_normal((m, k), np.float32), rng.standard_normal((k, n), np.float32)
            ja, jb = jnp.asarray(a), jnp.asarray(b)
            dot = jax.jit(jnp.dot)
            tj = _median_time(lambda: dot(ja, jb).block_until_ready(), args.repeats)
            ta_, tb_ = torch.from_numpy(a), torch.from_numpy(b)
            tt = _median_time(lambda: torch.mm(ta_, tb_), args.repeats)
            flop = 2.0 * m * k * n
            total_j += count * tj
            total_t += count * tt
            print(json.dumps(dict(figure="matmul", d_model=d, m=m, k=k, n=n, count=count, jax_s=round(tj, 6),
                                  torch_s=round(tt, 6), jax_gflops=round(flop / tj / 1e9, 1),
                                  torch_gflops=round(flop / tt / 1e9, 1), torch_over_jax=round(tj / tt, 3),
                                  xla_flags=flags)), flush=True)
        print(json.dumps(dict(figure="matmul_step_total", d_model=d, jax_s=round(total_j, 4),
                              torch_s=round(total_t, 4), jax_over_torch_time=round(total_j / total_t, 3),
                              xla_flags=flags, load_avg_1m=round(os.getloadavg()[0], 2))), flush=True)


if __name__ == "__main__":
    main()
