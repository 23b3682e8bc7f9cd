"""benchmarks/device.py's `serving` part: the continuous-batching engine (llada_jax.serving) at the
LLaDA-8B shape with random bf16 weights against one `generate` call per request.

Rows (figure "serving"): the engine with as many slots as requests (32; smoke 2), then with 1
slot, every request submitted at once (`Engine.generate`), then `sequential_generate` (one
batch-1 `generate` call per request, in turn); `speedup_vs_sequential` is the sequential
seconds over each row's. Warm: each program is compiled first (`compile_s`: the engine's
`warm_up`, the sampler's first call) and not timed. Output tokens/s counts the answer tokens
returned; latency runs from submission to the request's end, so behind one slot it includes the
wait in the queue. EOS is never sampled (`logits_eos_inf`): random weights would end requests
at random, and every request returns gen_length tokens.
"""

from __future__ import annotations

import time

import jax
import numpy as np

from device_parts.common import attempt, random_8b


def _latency_row(seconds, latencies, tokens):
    lat = np.asarray(latencies)
    return dict(seconds=round(seconds, 4), output_tokens=int(tokens), tokens_per_s=round(tokens / seconds, 1),
                latency_p50_s=round(float(np.percentile(lat, 50)), 4),
                latency_p99_s=round(float(np.percentile(lat, 99)), 4))


def _sequential(model, params, prompts, sp):
    """(compile seconds, timing fields): one warm batch-1 `generate` call per prompt, in turn."""
    from llada_jax.sampling import generate

    t = time.perf_counter()
    jax.block_until_ready(generate(model, params, np.asarray(prompts[:1], np.int32), sampling=sp))
    compile_s = time.perf_counter() - t
    latencies, start = [], time.perf_counter()
    for p in prompts:
        t = time.perf_counter()
        out = generate(model, params, np.asarray([p], np.int32), sampling=sp)
        jax.block_until_ready(out)
        latencies.append(time.perf_counter() - t)
    return compile_s, _latency_row(time.perf_counter() - start, latencies, len(prompts) * sp.gen_length)


def _engine(model, params, prompts, sp, slots):
    """(compile seconds, timing fields, model calls): every prompt submitted at once to an
    engine of `slots` slots with one canvas (prompt + answer), run to the last request's end."""
    from llada_jax.serving.engine import Engine

    eng = Engine(model, params, slots=slots, buckets=(len(prompts[0]) + sp.gen_length,),
                 block_width=sp.block_length, max_queue=len(prompts), logits_eos_inf=True)
    t = time.perf_counter()
    eng.warm_up()
    compile_s = time.perf_counter() - t
    start = time.perf_counter()
    reqs = eng.generate(prompts, sp)
    seconds = time.perf_counter() - start
    timing = _latency_row(seconds, [r.finished - r.submitted for r in reqs], sum(len(r.tokens) for r in reqs))
    return compile_s, timing, eng.model_calls


def _row(model, params, prompts, sp, mode, slots, shape):
    """The row of one engine (`slots` slots) or of the sequential calls."""
    if mode == "engine":
        compile_s, timing, calls = _engine(model, params, prompts, sp, slots)
        extra = dict(slots=slots, model_calls=calls)
    else:
        (compile_s, timing), extra = _sequential(model, params, prompts, sp), {}
    return dict(figure="serving", mode=mode, concurrency=slots, **shape, compile_s=round(compile_s, 2), **timing,
                **extra)


def serving(ctx):
    """Output tokens/s and p50/p99 latency of the engine at concurrency 1 and 32 (smoke 2) and of
    as many sequential `generate` calls."""
    from llada_jax.sampling.params import SamplingParams

    model, params = random_8b(ctx)
    mcfg = model.config
    n, prompt_len, gen, block = (2, 8, 16, 8) if ctx.smoke else (32, 64, 64, 32)
    sp = SamplingParams(gen_length=gen, block_length=block, steps=gen // 2, logits_eos_inf=True)
    low = min(mcfg.mask_token_id, mcfg.eos_token_id)  # a prompt holds no mask or EOS id
    prompts = np.random.default_rng(0).integers(0, low, (n, prompt_len)).tolist()
    shape = dict(requests=n, prompt_len=prompt_len, gen_length=gen, block_length=block, steps=sp.steps,
                 d_model=mcfg.d_model, n_layers=mcfg.n_layers, dtype=mcfg.dtype, attention=mcfg.attention)
    rows = []
    # the concurrency-32 engine first: the figure that matters is not the one a budget skips
    for mode, slots in (("engine", n), ("engine", 1), ("sequential_generate", 1)):
        if ctx.over():
            rows.append(dict(figure="serving", mode=mode, concurrency=slots, skipped="budget"))
            continue
        rows.append(attempt(lambda: _row(model, params, prompts, sp, mode, slots, shape), figure="serving",
                            mode=mode, concurrency=slots))
    sequential_s = next((r["seconds"] for r in rows if r["mode"] == "sequential_generate" and "seconds" in r), None)
    for r in rows:
        if sequential_s and "seconds" in r:
            r["speedup_vs_sequential"] = round(sequential_s / r["seconds"], 3)
    return rows
