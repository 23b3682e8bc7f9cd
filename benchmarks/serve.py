"""Serving throughput: `python -m llada_jax.serve` on 127.0.0.1 against sequential
`generate` calls, on a tiny random model (`--model=tiny`: vocabulary 300, so a random
answer seldom holds EOS, which ends an engine request early) or one of the demo's shape
(`--model=demo`, configs/demo.py: with its 16-token vocabulary most random answers stop at
an EOS in their first block, so only its `forward` rows compare like with like) on this
machine's CPU, one JSON line per figure.

    python benchmarks/serve.py [--model tiny --requests 64 --gen_length 32 --block_length 8 --slots 32]

Figures: requests/s, output tokens/s, p50 and p99 latency (seconds) of `sequential`
(one `llada_jax.sampling.generate` call per request, in this process, compiled first),
of `engine_in_process` (`Engine.generate` over all requests, no HTTP) and of the server
at concurrency 1, 8 and 32 (that many client threads, each sending its share of
--requests completions; the server compiled its program before opening the port).
`batching_ceiling`: --slots times the model's forward time on one row of the canvas over
its time on --slots rows, the most any batching can gain over batch-1 calls on this
machine (a 2-core CPU is compute-bound: a batch costs nearly its rows' sum). Every loop
is bounded: --requests requests per row. Prompts are token ids of one length (the
sequential baseline compiles one program). Each line carries the load average.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np


def _line(row, figure, value, args, **extra):
    print(json.dumps(dict(figure=figure, row=row, value=round(value, 4), model=args.model, requests=args.requests,
                          gen_length=args.gen_length, block_length=args.block_length, prompt_len=args.prompt_len,
                          slots=args.slots, load_avg_1m=round(os.getloadavg()[0], 2), cpu_count=os.cpu_count(),
                          **extra)), flush=True)


def _report(row, latencies, seconds, tokens, args, **extra):
    lat = np.asarray(latencies)
    _line(row, "requests_per_s", len(lat) / seconds, args, **extra)
    _line(row, "output_tokens_per_s", tokens / seconds, args, **extra)
    _line(row, "latency_p50_s", float(np.percentile(lat, 50)), args, **extra)
    _line(row, "latency_p99_s", float(np.percentile(lat, 99)), args, **extra)


def _ceiling(model, params, length, args):
    """The forward pass's per-row cost at batch 1 against batch --slots (one block's
    window of output positions, as the engine computes)."""
    import jax
    import jax.numpy as jnp

    def per_call(b):
        x = jnp.zeros((b, length), jnp.int32)
        out = jnp.broadcast_to(jnp.arange(length - args.block_length, length), (b, args.block_length))
        f = jax.jit(lambda p, x: model.apply({"params": p}, x, output_positions=out).sum())
        f(params, x).block_until_ready()
        best = float("inf")
        for _ in range(5):
            t = time.perf_counter()
            for _ in range(10):
                f(params, x).block_until_ready()
            best = min(best, (time.perf_counter() - t) / 10)
        return best

    one, many = per_call(1), per_call(args.slots)
    _line("forward", "forward_ms_batch_1", one * 1e3, args)
    _line("forward", f"forward_ms_batch_{args.slots}", many * 1e3, args)
    _line("forward", "batching_ceiling", args.slots * one / many, args)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--gen_length", type=int, default=32)
    ap.add_argument("--block_length", type=int, default=8)
    ap.add_argument("--prompt_len", type=int, default=16)
    ap.add_argument("--slots", type=int, default=32)
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument("--model", choices=("demo", "tiny"), default="tiny")
    args = ap.parse_args()

    import httpx
    import jax

    from llada_jax.interop.export import save_pretrained
    from llada_jax.model import LLaDAConfig, build, init_params
    from llada_jax.sampling import sampler
    from llada_jax.sampling.params import SamplingParams
    from llada_jax.serving.engine import Engine

    g, bl = args.gen_length, args.block_length
    bucket = -(-(args.prompt_len + g) // 16) * 16
    if args.model == "demo":
        from llada_jax.config import load_config_file, with_model_defaults
        from llada_jax.model import from_config

        demo = load_config_file(os.path.join(os.path.dirname(__file__), "..", "configs", "demo.py"))
        cfg = from_config.model_config(with_model_defaults(demo), None)
        cfg = dataclasses.replace(cfg, max_sequence_length=max(cfg.max_sequence_length, bucket))
    else:
        cfg = LLaDAConfig.tiny(vocab_size=300, embedding_size=300, max_sequence_length=256, mask_token_id=299,
                               eos_token_id=298, pad_token_id=298)
    params = init_params(cfg, jax.random.key(0))
    model = build(cfg)
    rng = np.random.default_rng(0)
    prompts = [rng.integers(0, cfg.vocab_size - 2, args.prompt_len).tolist() for _ in range(args.requests)]
    _ceiling(model, params, bucket, args)

    def one(p):
        out = sampler.generate(model, params, np.asarray([p], np.int32), steps=g, gen_length=g, block_length=bl)
        return np.asarray(out)[0, len(p):]

    one(prompts[0])  # compile
    lat, t0 = [], time.perf_counter()
    for p in prompts:
        t = time.perf_counter()
        one(p)
        lat.append(time.perf_counter() - t)
    seq_s = time.perf_counter() - t0
    _report("sequential", lat, seq_s, g * len(prompts), args)

    engine = Engine(model, params, slots=args.slots, buckets=(bucket,), block_width=bl)
    engine.warm_up()
    sp = SamplingParams(gen_length=g, steps=g, block_length=bl)
    engine.generate(prompts[:1], sp)
    t0 = time.perf_counter()
    done = engine.generate(prompts, sp)
    secs = time.perf_counter() - t0
    _report("engine_in_process", [r.finished - r.submitted for r in done], secs, sum(len(r.tokens) for r in done),
            args, speedup_vs_sequential=round(seq_s / secs, 2))

    with tempfile.TemporaryDirectory() as d:
        save_pretrained(cfg, params, os.path.join(d, "hf"), dtype="float32")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        proc = subprocess.Popen([sys.executable, "-m", "llada_jax.serve", f"--hf={d}/hf", f"--port={port}",
                                 f"--slots={args.slots}", f"--buckets={bucket}", f"--block_width={bl}",
                                 f"--max_queue={max(256, args.requests)}", f"--max_tokens={g}"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(1200):  # at most 10 minutes to load and compile
                if proc.poll() is not None:
                    raise SystemExit(f"error: the server exited: {proc.stderr.read().decode()[-2000:]}")
                try:
                    if httpx.get(url + "/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.5)
            client = httpx.Client(timeout=600)
            body = dict(model="m", max_tokens=g, steps=g, block_length=bl, temperature=0.0)

            def ask(p):
                t = time.perf_counter()
                r = client.post(url + "/v1/completions", json=dict(body, prompt=p))
                r.raise_for_status()
                return time.perf_counter() - t, r.json()["usage"]["completion_tokens"]

            ask(prompts[0])
            for c in [int(x) for x in args.concurrency.split(",")]:
                t0 = time.perf_counter()
                with concurrent.futures.ThreadPoolExecutor(c) as pool:
                    res = list(pool.map(ask, prompts))
                secs = time.perf_counter() - t0
                row = f"server_concurrency_{c}"
                _report(row, [r[0] for r in res], secs, sum(r[1] for r in res), args, concurrency=c,
                        speedup_vs_sequential=round(seq_s / secs, 2))
        finally:
            proc.terminate()
            proc.wait(timeout=60)


if __name__ == "__main__":
    main()
