"""Dense against chunked attention in the real train step on this CPU: one JSON line per figure.

    python benchmarks/attention.py [--seqs=512,1024,2048] [--reps=3] [--compile_only_seqs=8192,16384]
                                   [--chunked_only_seqs=8192]

For each sequence length: a d_model 512 model (8 heads, 2 layers, vocabulary 4096,
float32, batch 1) with attention "dense" and "chunked"; the compiled step's memory
(XLA's memory_analysis: temporaries, and the total with the donated state) and its
time, measured in pairs (dense, chunked, dense, ...) so that load from other processes
on a shared machine hits both alike; the medians are reported. At the compile-only
lengths the step is compiled but not run: the memory dense would need, without
allocating it. At the chunked-only lengths, chunked runs (one timed step) where dense
would need more memory than this shared machine gives one process.

    python benchmarks/attention.py --seqs= --compile_only_seqs= --chunked_only_seqs= --block_diffusion_seqs=1024,2048

At the block-diffusion lengths L: attention alone (forward + backward, 8 heads of 64,
batch 1) over BD3-LM's 2L training sequence, block 16: dense, chunked with the
bidirectional pattern (every block pair) and chunked with the block-diffusion pattern
(only its non-empty block pairs): the counted attention FLOPs and the median time, and the
time ratios of the skipping kernel over the bidirectional one and over dense.
"""

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from llada_jax.config import base_config  # noqa: E402
from llada_jax.parallel import sharding  # noqa: E402
from llada_jax.training import optimizer, step, train_state  # noqa: E402
from llada_jax.model import LLaDAConfig, build  # noqa: E402
from llada_jax.model.attention import KeyMask, chunked, dense, patterns  # noqa: E402

GIB = 1024 ** 3
IMPLS = ("dense", "chunked")


def make_step(attention, seq, batch):
    cfg = LLaDAConfig(d_model=512, n_heads=8, n_kv_heads=8, n_layers=2, mlp_hidden_size=1536, vocab_size=4096,
                      embedding_size=4096, max_sequence_length=seq, mask_token_id=4095, eos_token_id=4094,
                      pad_token_id=4094, attention=attention)
    optim = base_config().optim  # the defaults (AdamW, clipping), at a constant lr
    optim.update(schedule="constant", warmup_steps=0)
    model = build(cfg)
    tx, schedule = optimizer.make_optimizer(optim, 100)
    mesh = sharding.make_mesh(dict(data=1, fsdp=1, tensor=1), jax.devices()[:1])
    abstract, shardings = train_state.state_shardings(model, tx, mesh)
    st = step.Static(model, tx, "pretrain", cfg.mask_token_id, 1e-3, 0.0, 1, schedule)
    step_fn = step.compile_step(st, mesh, shardings, {"input_ids": 2})
    ids = np.random.default_rng(0).integers(0, 4000, (batch, seq), dtype=np.int32)
    b = sharding.global_batch({"input_ids": ids}, mesh, batch)
    with jax.set_mesh(mesh), sharding.logical_rules_context():
        mem = step_fn.lower(abstract, b).compile().memory_analysis()
    figures = {"temp_gib": round(mem.temp_size_in_bytes / GIB, 4),
               "total_gib": round((mem.argument_size_in_bytes + mem.output_size_in_bytes - mem.alias_size_in_bytes
                                   + mem.temp_size_in_bytes) / GIB, 4)}
    return step_fn, (model, tx, mesh, shardings), b, figures


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seqs", default="512,1024,2048")
    ap.add_argument("--compile_only_seqs", default="8192,16384")
    ap.add_argument("--chunked_only_seqs", default="8192")
    ap.add_argument("--block_diffusion_seqs", default="1024")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=1)
    a = ap.parse_args()
    for seq in [int(s) for s in a.seqs.split(",") if s]:
        runs, times = {}, {impl: [] for impl in IMPLS}
        for impl in IMPLS:
            step_fn, (model, tx, mesh, shardings), b, figures = make_step(impl, seq, a.batch)
            state = train_state.init_state(model, tx, mesh, 0, shardings)
            state, m = step_fn(state, b)  # compile and warm up
            jax.block_until_ready(m)
            runs[impl] = [step_fn, state, b, figures]
        for _ in range(a.reps):  # paired, alternating
            for impl in IMPLS:
                step_fn, state, b, _ = runs[impl]
                t = time.perf_counter()
                state, m = step_fn(state, b)
                jax.block_until_ready(m)
                times[impl].append(time.perf_counter() - t)
                runs[impl][1] = state
        for impl in IMPLS:
            step_s = statistics.median(times[impl])
            print(json.dumps({"figure": "attention_train_step", "attention": impl, "seq_len": seq, "batch": a.batch,
                              "d_model": 512, "step_s_median": round(step_s, 3),
                              "step_s_all": [round(x, 3) for x in times[impl]],
                              "tokens_per_s": round(a.batch * seq / step_s, 1), **runs[impl][3]}), flush=True)
        ratio = statistics.median(times["chunked"]) / statistics.median(times["dense"])
        print(json.dumps({"figure": "chunked_over_dense_time", "seq_len": seq, "ratio": round(ratio, 3)}), flush=True)
    for seq in [int(s) for s in a.chunked_only_seqs.split(",") if s]:
        step_fn, (model, tx, mesh, shardings), b, figures = make_step("chunked", seq, a.batch)
        state = train_state.init_state(model, tx, mesh, 0, shardings)
        state, m = step_fn(state, b)
        jax.block_until_ready(m)
        t = time.perf_counter()
        state, m = step_fn(state, b)
        jax.block_until_ready(m)
        step_s = time.perf_counter() - t
        print(json.dumps({"figure": "attention_train_step", "attention": "chunked", "seq_len": seq, "batch": a.batch,
                          "d_model": 512, "step_s_median": round(step_s, 3), "loss": round(float(m["loss"]), 4),
                          **figures}), flush=True)
    for seq in [int(s) for s in a.compile_only_seqs.split(",") if s]:
        for impl in IMPLS:
            figures = make_step(impl, seq, a.batch)[3]
            print(json.dumps({"figure": "attention_train_step_memory", "attention": impl, "seq_len": seq,
                              "batch": a.batch, "d_model": 512, "compiled_only": True, **figures}), flush=True)
    for seq in [int(s) for s in a.block_diffusion_seqs.split(",") if s]:
        block_diffusion_attention(seq, a.reps)


def block_diffusion_attention(seq: int, reps: int, heads: int = 8, head_dim: int = 64, block: int = 16):
    """Attention over BD3-LM's [x_t, x_0] (2 x seq tokens): time and FLOPs per kernel."""
    import jax.numpy as jnp

    n = 2 * seq
    ks = jax.random.split(jax.random.key(0), 3)
    q, k, v = (jax.random.normal(kk, (1, n, heads, head_dim), jnp.float32) for kk in ks)
    bd3 = patterns.block_diffusion(seq, block)
    dense_flops = 3 * 4 * n * n * heads * head_dim  # forward: 2 matmuls x 2 FLOPs; + backward = 3 x forward
    cases = [("dense", dense.attention, bd3, 1.0),
             ("chunked_bidirectional", chunked.attention, patterns.BIDIRECTIONAL, 1.0),
             ("chunked_block_diffusion", chunked.attention, bd3, chunked.work_fraction(bd3, n, n))]
    fns = {}
    for name, fn, pattern, _ in cases:
        def loss(q, k, v, fn=fn, pattern=pattern):
            return jnp.sum(fn(q, k, v, KeyMask(), pattern=pattern))
        fns[name] = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
        jax.block_until_ready(fns[name](q, k, v))
    times = {name: [] for name, *_ in cases}
    for _ in range(reps):  # paired, alternating
        for name, *_ in cases:
            t = time.perf_counter()
            jax.block_until_ready(fns[name](q, k, v))
            times[name].append(time.perf_counter() - t)
    for name, _, pattern, frac in cases:
        print(json.dumps({"figure": "block_diffusion_attention", "kernel": name, "seq_len": seq, "keys": n,
                          "block_size": block, "work_fraction": round(frac, 4),
                          "attention_gflops": round(dense_flops * frac / 1e9, 3),
                          "fwd_bwd_s_median": round(statistics.median(times[name]), 4)}), flush=True)
    med = {name: statistics.median(t) for name, t in times.items()}
    print(json.dumps({"figure": "block_diffusion_skip_time_ratio", "seq_len": seq,
                      "ratio": round(med["chunked_block_diffusion"] / med["chunked_bidirectional"], 3),
                      "chunked_over_dense": round(med["chunked_block_diffusion"] / med["dense"], 3)}), flush=True)


if __name__ == "__main__":
    main()
