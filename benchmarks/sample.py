"""Sampler speed: compile time, tokens/s, time per step and the fraction of the machine's
matmul peak, one JSON line per figure.

    python benchmarks/sample.py                      # d_model 256 and 512, batch 1 and 8
    python benchmarks/sample.py --d_model 256 --batch 1 --repeats 1
    python benchmarks/sample.py --torch              # also the official loop in PyTorch

The exact sampler's work is fixed by the algorithm: per step one forward pass over the
whole sequence, with the output head only where a token can be revealed (the block).
`flop_fraction` = those FLOPs over (time x the fp32 matmul peak measured in this run).
With --torch, the official sampling loop (benchmarks/torch_reference.py) runs the same
weights through our PyTorch module (llada_jax.interop.torch_model) on the same machine, and
`same_tokens` says whether both produced the same tokens.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from llada_jax import host_memory
from llada_jax.model.flops import matmul_params, measure_peak_flops
from llada_jax.model import LLaDAConfig, build, init_params
from llada_jax.sampling import generate


def emit(**fields):
    print(json.dumps(fields), flush=True)


def forward_flops(cfg: LLaDAConfig, queries: int, keys: int, head_positions: int) -> float:
    """FLOPs of one forward pass of one row: `queries` positions attending to `keys`
    keys, the output head on `head_positions` of them."""
    head = cfg.d_model * cfg.embedding_size
    body = 2.0 * (matmul_params(cfg) - head) * queries
    attn = 4.0 * queries * keys * cfg.n_heads * cfg.head_dim * cfg.n_layers
    return body + attn + 2.0 * head * head_positions


def bench_config(d_model: int, vocab: int) -> LLaDAConfig:
    ids = {} if vocab > 126336 else dict(mask_token_id=vocab - 1, eos_token_id=vocab - 2, pad_token_id=vocab - 2)
    return LLaDAConfig(d_model=d_model, n_heads=d_model // 64, n_kv_heads=d_model // 64, n_layers=4,
                       mlp_hidden_size=3 * d_model, vocab_size=vocab, embedding_size=vocab,
                       max_sequence_length=1024, **ids)


def run(args):
    policy = host_memory.configure()  # as the commands do ($LLADA_JAX_HOST_MEMORY)
    peak = measure_peak_flops(n=2048)
    emit(figure="matmul_peak_gflops", value=round(peak / 1e9, 1), dtype="float32",
         devices=str(jax.devices()[0]), host_memory=policy)
    for d_model in args.d_model:
        cfg = bench_config(d_model, args.vocab)
        model = build(cfg)
        params = init_params(cfg, jax.random.key(0))
        seq = args.prompt_len + args.gen_length
        for batch in args.batch:
            prompt = np.random.default_rng(0).integers(0, 1000, (batch, args.prompt_len)).astype(np.int32)
            for threshold in (None, 0.9):
                kw = dict(steps=args.steps, gen_length=args.gen_length, block_length=args.block_length,
                          threshold=threshold, return_stats=True)
                t = time.perf_counter()
                out, stats = generate(model, params, prompt, **kw)
                out.block_until_ready()
                first = time.perf_counter() - t
                times = []
                for _ in range(args.repeats):
                    t = time.perf_counter()
                    out, stats = generate(model, params, prompt, **kw)
                    out.block_until_ready()
                    times.append(time.perf_counter() - t)
                best = min(times)
                calls = stats["model_calls"]
                flops = batch * calls * forward_flops(cfg, seq, seq, args.block_length)
                common = dict(d_model=d_model, n_layers=cfg.n_layers, vocab=args.vocab, batch=batch,
                              gen_length=args.gen_length, steps=args.steps, block_length=args.block_length,
                              threshold=threshold)
                emit(figure="compile_s", value=round(first - best, 2), **common)
                emit(figure="tokens_per_s", value=round(batch * args.gen_length / best, 1),
                     model_calls=calls, **common)
                emit(figure="step_ms", value=round(1e3 * best / calls, 2), **common)
                emit(figure="flop_fraction", value=round(flops / best / peak, 3),
                     gflops_per_s=round(flops / best / 1e9, 1), **common)
                if args.torch and threshold is None:
                    torch_reference(cfg, params, prompt, np.asarray(out), best, args, common)
        # What the reference spends: the output head on every position at every step.
        ids = jnp.zeros((1, seq), jnp.int32)
        block = jnp.arange(args.prompt_len, args.prompt_len + args.block_length)[None]
        full = jax.jit(lambda p, x: model.apply({"params": p}, x))
        part = jax.jit(lambda p, x: model.apply({"params": p}, x, output_positions=block))
        for name, f in (("full_head", full), ("block_head", part)):
            f(params, ids).block_until_ready()
            t = time.perf_counter()
            for _ in range(5):
                f(params, ids).block_until_ready()
            emit(figure=f"forward_ms_{name}", value=round((time.perf_counter() - t) / 5 * 1e3, 2),
                 d_model=d_model, vocab=args.vocab, seq_len=seq)


def torch_reference(cfg, params, prompt, ours, our_time, args, common):
    """Time the official loop in PyTorch on the same weights; check it gives our tokens."""
    import torch

    from llada_jax.interop import hf
    from llada_jax.interop.torch_model import LLaDATorch

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from torch_reference import official_generate

    torch.set_num_threads(os.cpu_count())
    with tempfile.TemporaryDirectory() as d:
        hf.save_pretrained(cfg, params, d, dtype="float32")
        tmodel = LLaDATorch.from_pretrained(d)
    t = time.perf_counter()
    out = official_generate(tmodel, torch.tensor(prompt, dtype=torch.long), steps=args.steps,
                            gen_length=args.gen_length, block_length=args.block_length, mask_id=cfg.mask_token_id)
    took = time.perf_counter() - t
    emit(figure="torch_reference_tokens_per_s", value=round(prompt.shape[0] * args.gen_length / took, 1),
         speedup_of_ours=round(took / our_time, 2), same_tokens=bool((out.numpy() == ours).all()),
         torch=torch.__version__, **common)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--d_model", type=int, nargs="+", default=[256, 512])
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    p.add_argument("--vocab", type=int, default=126464, help="LLaDA's vocabulary by default")
    p.add_argument("--prompt_len", type=int, default=32)
    p.add_argument("--gen_length", type=int, default=128)
    p.add_argument("--steps", type=int, default=128)
    p.add_argument("--block_length", type=int, default=32)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--torch", action="store_true", help="also time the official loop in PyTorch")
    run(p.parse_args())


if __name__ == "__main__":
    main()
