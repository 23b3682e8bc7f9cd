"""What matters on one accelerator, in one command: one JSON line per figure.

    python benchmarks/device.py [--out=DIR] [--overwrite] [--smoke]

Parts, in this order (each a function of `PARTS`, with its share of the 8-minute budget on one
H100/H200 or TPU host; a part that runs over skips its remaining rows, one that fails prints an
"error" row and the next part runs):
- attention_parity: every implementation the device supports against "dense", output and the
  gradients of q, k and v, fp32 and bf16, with right padding, left padding and the sampler's
  KV-cache shape (more keys than queries, a boolean mask), at tests/attention_test.py's
  tolerances (fp32 1e-5 at "highest" matmul precision, bf16 3e-2). `err` is the largest
  |got - want| / (tol + tol |want|): ok when <= 1. cuDNN takes no boolean mask: those rows say
  `fallback: "chunked"`, as the model does.
- lora_memory: the LLaDA-8B LoRA rank-16 SFT step at sequence 2048, batch 1, on one device with a
  random bf16 base: the device's peak `memory_stats()` after two steps next to the `total_bytes`
  of `python -m llada_jax.plan` for the same program (run in a subprocess on the CPU, started
  first so it compiles while the device works); `plan_error` = plan / measured - 1. It runs
  before the train steps because the peak counts from the start of the process.
- train_step: the LLaDA-1B shape (configs/llada_1b.py) in bf16 at sequence 4096 for each
  attention implementation the device supports: compile and step time, tokens/s and MFU against
  the bf16 matmul peak measured first in the same run (llada_jax.model.flops).
- sampler: the exact sampler, threshold 0.9 and threshold 0.9 with the dual cache
  (benchmarks/fast_sampling.py's methods) at the LLaDA-8B shape with random bf16 weights, batch
  1 and 16: tokens/s over the best timed call, compile excluded. Random weights reach no 0.9
  confidence, so the threshold rows show the rule's cost at the fixed schedule and the cache's
  speed-up, not the trained model's fewer calls.
- block_decode: block diffusion at the LLaDA-8B shape made block-causal (block_size 32) with
  random bf16 weights and its exact block KV cache (llada_jax.sampling.block_cache), the fixed
  schedule and threshold 0.9: tokens/s at batch 1 and 16.
- serving: the continuous-batching engine (llada_jax.serving.engine) at the LLaDA-8B shape with
  random bf16 weights: 32 requests (prompt 64, answer 64 in blocks of 32, 2 tokens a call)
  submitted at once to an engine of 32 slots and of 1 slot (concurrency 32 and 1), and the same
  requests as 32 sequential batch-1 `generate` calls: output tokens/s and p50/p99 latency,
  compiles excluded (benchmarks/device_parts/serving.py).
- moe: the forward pass and train step of the LLaDA-MoE-7B-A1B shape (4 of its 16 layers) and
  of Dream-v0-7B's (6 of 28) in bf16 at sequence 2048: tokens/s and MFU against the same peak,
  the MoE's over its active parameters (benchmarks/device_parts/models.py).
Every row names its `part`; a further part is one function `fn(ctx) -> rows` plus one `PARTS`
entry (its helpers in benchmarks/device_parts/). The figures go to DIR/figures.jsonl and a table
to DIR/README.md (default docs/results/device/<device kind>/; an existing figures.jsonl is kept
unless --overwrite). The budgets are estimates until a device run replaces them.
--smoke: every part at tiny shapes with fewer rows (CPU: the kv_cache parity case, chunked
training, batch 2 with two samplers, 2 requests, the 2-layer MoE and Dream, one timed call),
so this script is tested by `make test`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from device_parts import models, serving  # noqa: E402
from device_parts.common import TINY, Ctx, build_step, config_with, random_8b, timed  # noqa: E402
from llada_jax.model import flops  # noqa: E402
from llada_jax.model.attention import KeyMask, attend  # noqa: E402

TOL = {"float32": 1e-5, "bfloat16": 3e-2}  # tests/attention_test.py
LORA = {"lora.rank": 16, "data.kind": "sft", "data.source": "jsonl", "data.seq_len": 2048, "data.batch_size": 1}


def plan_argv(path: str, overrides: dict) -> list:
    return [sys.executable, "-m", "llada_jax.plan", f"--config={os.path.join(ROOT, path)}", "--devices=1"] + [
        f"--config.{k}={v}" for k, v in overrides.items()]


def lora_overrides(ctx):
    return dict(LORA, **(dict(TINY, **{"data.seq_len": 64}) if ctx.smoke else {}))


# ---- attention parity ---------------------------------------------------------------------------
def _value_and_grads(impl, q, k, v, mask):
    def loss(q, k, v):  # a fixed random projection of the output: every element matters
        out = attend(impl, q, k, v, mask)
        w = jax.random.normal(jax.random.key(7), out.shape, jnp.float32)
        return jnp.sum(out.astype(jnp.float32) * w), out
    (_, out), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(q, k, v)
    return [np.asarray(x, np.float32) for x in (out, *grads)]


def attention_parity(ctx):
    b, h, kvh, d, l, s_cache = (2, 4, 2, 8, 11, 13) if ctx.smoke else (2, 16, 8, 128, 1024, 1280)
    l_cache = 5 if ctx.smoke else 256
    cases = [("right_padding", l, l, KeyMask(lengths_B=jnp.array([l // 2, l]))),
             ("left_padding", l, l, KeyMask(valid_BxS=jnp.arange(l)[None, :] >= jnp.array([[l // 4], [0]]))),
             ("kv_cache", l_cache, s_cache,
              KeyMask(valid_BxS=jnp.broadcast_to(jnp.arange(s_cache) % 3 != 1, (b, s_cache))))]
    rows = []
    for dtype in ("float32", "bfloat16"):
        for case, lq, sk, mask in cases[-1:] if ctx.smoke else cases:
            ks = jax.random.split(jax.random.key(lq * 100 + sk), 3)
            q = jax.random.normal(ks[0], (b, lq, h, d), dtype)
            k, v = (jax.random.normal(kk, (b, sk, kvh, d), dtype) for kk in ks[1:])
            with jax.default_matmul_precision("highest"):
                want = _value_and_grads("dense", q, k, v, mask)
                for impl in ctx.impls()[1:]:
                    if ctx.over():
                        rows.append(dict(figure="attention_parity", impl=impl, skipped="budget"))
                        continue
                    if impl == "cudnn" and dtype == "float32":
                        continue  # cuDNN's flash kernels compute in bf16/fp16 only
                    got = _value_and_grads(impl, q, k, v, mask)
                    tol = TOL[dtype]
                    err = {n: float(np.max(np.abs(a - w) / (tol + tol * np.abs(w))))
                           for n, a, w in zip(("out", "dq", "dk", "dv"), got, want)}
                    row = dict(figure="attention_parity", impl=impl, dtype=dtype, case=case, queries=lq, keys=sk,
                               heads=h, kv_heads=kvh, head_dim=d, tol=tol, ok=max(err.values()) <= 1.0,
                               **{f"err_{n}": round(e, 4) for n, e in err.items()})
                    if impl == "cudnn" and mask.valid_BxS is not None:
                        row["fallback"] = "chunked"
                    rows.append(row)
    return rows


# ---- LoRA memory --------------------------------------------------------------------------------
def start_plan(ctx):
    """The plan of the LoRA program, compiled on the CPU in a subprocess (started first)."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    ctx.plan_proc = subprocess.Popen(plan_argv("configs/llada_8b.py", lora_overrides(ctx)), cwd=ROOT, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def lora_memory(ctx):
    overrides = lora_overrides(ctx)
    step, state, batch, _ = build_step(config_with("configs/llada_8b.py", overrides))
    for _ in range(2):
        state, m = step(state, batch)
    jax.block_until_ready(m)
    stats = jax.devices()[0].memory_stats() or {}
    measured = stats.get("peak_bytes_in_use")
    del state
    out, err = ctx.plan_proc.communicate(timeout=600)
    if ctx.plan_proc.returncode:
        raise RuntimeError(f"llada_jax.plan failed: {err.strip().splitlines()[-1:]}")
    p = json.loads(out.strip().splitlines()[-1])
    return [dict(figure="lora_memory", lora_rank=overrides["lora.rank"], seq_len=overrides["data.seq_len"],
                 batch=1, loss=round(float(m["loss"]), 4), measured_peak_bytes=measured,
                 measured_peak_gib=None if measured is None else round(measured / 2**30, 3),
                 plan_total_bytes=p["total_bytes"], plan_total_gib=round(p["total_bytes"] / 2**30, 3),
                 plan_error=None if not measured else round(p["total_bytes"] / measured - 1, 4),
                 plan_command=" ".join(plan_argv("configs/llada_8b.py", overrides)[1:]))]


# ---- train step ---------------------------------------------------------------------------------
def train_step(ctx):
    peak, peak_row = ctx.peak_flops()
    rows = [peak_row] if peak_row else []
    base = dict(TINY, **{"data.seq_len": 64}) if ctx.smoke else {"data.seq_len": 4096}
    base.update({"data.batch_size": ctx.train_batch, "data.random_length_prob": 0.0})
    for impl in ctx.impls(training=True):
        if ctx.over():
            rows.append(dict(figure="train_step", attention=impl, skipped="budget"))
            continue
        t = time.perf_counter()
        step, state, batch, mcfg = build_step(config_with("configs/llada_1b.py", dict(base, **{
            "model.attention": impl})))
        state, m = step(state, batch)
        jax.block_until_ready(m)
        compile_s = time.perf_counter() - t
        state, m, step_s = timed(lambda s: step(s, batch), state, 2 if ctx.smoke else 5)
        seq = base["data.seq_len"]
        step_flops = flops.train_flops_per_token(mcfg, seq) * ctx.train_batch * seq
        rows.append(dict(figure="train_step", attention=impl, dtype=mcfg.dtype, seq_len=seq, batch=ctx.train_batch,
                         d_model=mcfg.d_model, n_layers=mcfg.n_layers, loss=round(float(m["loss"]), 4),
                         compile_s=round(compile_s, 2), step_s=round(step_s, 4),
                         tokens_per_s=round(ctx.train_batch * seq / step_s, 1),
                         mfu=round(step_flops / step_s / peak, 4)))
        del state
    return rows


SAMPLERS = ("exact", "threshold_0.9", "threshold_0.9+dual_cache")


# ---- sampler ------------------------------------------------------------------------------------
def _sampler_rows(ctx, figure, model, params, methods: dict, block: int):
    """tokens/s of `generate` for each method at batch 1 and 16 (smoke: 2), best timed call."""
    from llada_jax.sampling import generate

    mcfg = model.config
    prompt_len, gen = (8, 16) if ctx.smoke else (64, 128)
    rows = []
    for batch in (2,) if ctx.smoke else (1, 16):
        prompt = np.random.default_rng(batch).integers(0, mcfg.vocab_size - 2, (batch, prompt_len), dtype=np.int32)
        for method, options in methods.items():
            if ctx.over():
                rows.append(dict(figure=figure, method=method, batch=batch, skipped="budget"))
                continue
            kw = dict(steps=gen, gen_length=gen, block_length=block, return_stats=True, **options)
            jax.block_until_ready(generate(model, params, prompt, **kw)[0])  # compile
            best = math.inf
            for _ in range(1 if ctx.smoke else 2):
                t = time.perf_counter()
                out, stats = generate(model, params, prompt, **kw)
                jax.block_until_ready(out)
                best = min(best, time.perf_counter() - t)
            rows.append(dict(figure=figure, method=method, batch=batch, prompt_len=prompt_len, gen_length=gen,
                             block_length=block, d_model=mcfg.d_model, n_layers=mcfg.n_layers,
                             attention=mcfg.attention, model_calls=int(stats["model_calls"]),
                             seconds=round(best, 4), tokens_per_s=round(batch * gen / best, 1)))
    return rows


def sampler(ctx):
    from fast_sampling import METHODS

    model, params = random_8b(ctx)
    methods = ("exact", "threshold_0.9+dual_cache") if ctx.smoke else SAMPLERS
    return _sampler_rows(ctx, "sampler", model, params, {m: METHODS[m] for m in methods}, 8 if ctx.smoke else 32)


def block_decode(ctx):
    """Block diffusion (the LLaDA-8B shape made block-causal, blocks of 32; smoke 8) with its
    exact block KV cache: a fixed schedule of one token per call, and threshold 0.9."""
    block = 8 if ctx.smoke else 32
    model, params = random_8b(ctx, **{"model.block_size": block})
    methods = {"block_cache": {}} if ctx.smoke else {"block_cache": {}, "block_cache+threshold_0.9": {"threshold": 0.9}}
    return _sampler_rows(ctx, "block_decode", model, params, methods, block)


# name, function, seconds on the device (8 minutes in all, compiles included)
PARTS = [("attention_parity", attention_parity, 35), ("lora_memory", lora_memory, 90),
         ("train_step", train_step, 90), ("sampler", sampler, 80), ("block_decode", block_decode, 40),
         ("serving", serving.serving, 65), ("moe", models.moe, 80)]


def write_results(out_dir, rows, env):
    with open(os.path.join(out_dir, "figures.jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    lines = [f"# {env['device']}: benchmarks/device.py{' --smoke' if env['smoke'] else ''}", "",
             f"Commit {env['commit']}, jax {env['jax']}, backend {env['backend']}. Every figure: figures.jsonl.", ""]
    for part, *_ in PARTS:
        part_rows = [r for r in rows if r.get("part") == part]
        if not part_rows:
            continue
        keys = [k for k in dict.fromkeys(k for r in part_rows for k in r) if k not in ("figure", "device", "part")]
        lines += [f"## {part}", "", "| " + " | ".join(["figure"] + keys) + " |", "|---" * (len(keys) + 1) + "|"]
        lines += ["| " + " | ".join([r["figure"]] + [str(r.get(k, "")) for k in keys]) + " |" for r in part_rows]
        lines.append("")
    with open(os.path.join(out_dir, "README.md"), "w") as f:
        f.write("\n".join(lines))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=None, help="default: docs/results/device/<device kind>[-smoke]/")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing figures.jsonl in --out")
    ap.add_argument("--smoke", action="store_true", help="every part at tiny shapes (CPU, seconds)")
    ap.add_argument("--train_batch", type=int, default=None, help="train_step batch (default 4; smoke 2)")
    a = ap.parse_args(argv)
    ctx = Ctx(a.smoke, a.train_batch or (2 if a.smoke else 4))
    if ctx.train_batch < 1:
        sys.exit(f"error: --train_batch={ctx.train_batch}: expected a positive integer")
    name = re.sub(r"[^a-z0-9]+", "-", ctx.device.lower()).strip("-") + ("-smoke" if a.smoke else "")
    out_dir = a.out or os.path.join(ROOT, "docs", "results", "device", name)
    if os.path.exists(os.path.join(out_dir, "figures.jsonl")) and not a.overwrite:
        sys.exit(f"error: --out={out_dir} already holds figures.jsonl: pass --overwrite to replace it, "
                 "or another --out")
    os.makedirs(out_dir, exist_ok=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    env = dict(figure="environment", device=ctx.device, backend=ctx.backend, smoke=a.smoke, jax=jax.__version__,
               commit=commit.stdout.strip() or "unknown", devices=jax.device_count())
    rows = [env]
    print(json.dumps(env), flush=True)
    start_plan(ctx)
    try:
        for part, fn, budget_s in PARTS:
            t, c = time.perf_counter(), time.process_time()
            ctx.deadline = math.inf if a.smoke else t + budget_s
            try:
                part_rows = fn(ctx)
            except Exception as e:  # noqa: BLE001 - a failing part is a figure; the next part runs
                part_rows = [dict(figure=part, error=f"{type(e).__name__}: {e}"[:2000])]
            for r in part_rows:
                r.update(device=ctx.device, part=part, part_s=round(time.perf_counter() - t, 1),
                         cpu_s=round(time.process_time() - c, 1))
                print(json.dumps(r), flush=True)
            rows += part_rows
    finally:
        if ctx.plan_proc.poll() is None:
            ctx.plan_proc.kill()
    write_results(out_dir, rows, env)


if __name__ == "__main__":
    main()
