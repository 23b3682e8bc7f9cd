"""Speed versus quality of the samplers on a model that can do its task, one JSON line
per (gen_length, batch, method).

The model: benchmarks/models/cummax8 (running maximum of 8 digits; the answer region is the
8 maxima then EOS up to gen_length; trained by benchmarks/train_task_model.py). The
held-out prompts are fixed (seed 12345). Every method is semi-autoregressive with
blocks of --block_length and steps = gen_length (one token per call for the exact
sampler); the others add Fast-dLLM's threshold rule, its prefix / dual KV cache, and the
end-of-answer rule (`eos_early_stop`, llada_jax.sampling.eos_stop), alone and combined.

Fields: accuracy (exact match of the whole answer region), agreement (fraction of
answers identical to the exact sampler's), model_calls (mean forward passes per
`generate` call, partial cached passes included), tokens_per_s (answer tokens, EOS
padding included, over the best of --repeats timed passes over all prompts, compile
excluded) and speedup (exact's time / this method's). load_avg: the machine's 1-minute
load when the row was timed (the CPU is shared; min-of-repeats damps that).

    python benchmarks/fast_sampling.py                   # the README table (24 min on the shared 2 cores)
    python benchmarks/fast_sampling.py --quick           # seconds: 2 methods, 16 prompts
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.path.join(ROOT, "benchmarks", "models", "cummax8")
METHODS = {
    "exact": dict(),
    "threshold_0.9": dict(threshold=0.9),
    "threshold_0.7": dict(threshold=0.7),
    "prefix_cache": dict(cache="prefix"),
    "dual_cache": dict(cache="dual"),
    "threshold_0.9+dual_cache": dict(threshold=0.9, cache="dual"),
    "eos_stop_block": dict(eos_early_stop="block"),
    "eos_stop_tail": dict(eos_early_stop="tail"),
    "threshold_0.9+dual_cache+eos_stop_block": dict(threshold=0.9, cache="dual", eos_early_stop="block"),
    "threshold_0.9+dual_cache+eos_stop_tail": dict(threshold=0.9, cache="dual", eos_early_stop="tail"),
    "threshold_0.7+dual_cache+eos_stop_tail": dict(threshold=0.7, cache="dual", eos_early_stop="tail"),
}
QUICK = ("exact", "threshold_0.9+dual_cache+eos_stop_tail")


def emit(**fields):
    print(json.dumps(fields), flush=True)


def load(path):
    """(LLaDA module, params, task) of a model directory written by train_task_model.py."""
    from llada_jax.data import tasks
    from llada_jax.interop import hf
    from llada_jax.model import build

    with open(os.path.join(path, "task.json")) as f:
        task_kw = json.load(f)
    config, params = hf.load_pretrained(path)
    return build(config), params, lambda gen_length: tasks.make_task(
        seq_len=task_kw["n_items"] + 1 + gen_length, vocab_size=config.vocab_size, **task_kw)


def sample_all(model, params, prompts, batch, kw):
    """(outputs (N, P + G), mean model calls per generate call) over all prompts."""
    import jax

    from llada_jax.sampling import generate

    outs, calls = [], []
    for i in range(0, len(prompts), batch):
        out, stats = generate(model, params, prompts[i: i + batch], return_stats=True, **kw)
        outs.append(np.asarray(jax.block_until_ready(out)))
        calls.append(stats["model_calls"])
    return np.concatenate(outs), float(np.mean(calls))


def run(args):
    model, params, make_task = load(args.model)
    methods = QUICK if args.quick else args.methods
    for gen_length in args.gen_lengths:
        task = make_task(gen_length)
        for batch in args.batches:
            rows = args.rows if batch > 1 else args.rows_batch1
            ids, _ = task.rows(np.random.default_rng(12345), rows)
            prompts = ids[:, : task.prompt_len]
            base = dict(steps=gen_length, gen_length=gen_length, block_length=min(args.block_length, gen_length))
            exact_out = exact_time = None
            for name in methods:
                kw = dict(base, **METHODS[name])
                sample_all(model, params, prompts[:batch], batch, kw)  # compile
                took = []
                for _ in range(args.repeats):
                    t = time.perf_counter()
                    out, calls = sample_all(model, params, prompts, batch, kw)
                    took.append(time.perf_counter() - t)
                best = min(took)
                if exact_out is None:
                    exact_out, exact_time = out, best
                accuracy, token_accuracy = task.score(ids, out)
                agreement = float(np.mean(np.all(out == exact_out, axis=1)))
                emit(figure="fast_sampling", gen_length=gen_length, block_length=base["block_length"], batch=batch,
                     rows=rows, method=name, accuracy=round(accuracy, 4), token_accuracy=round(token_accuracy, 4),
                     agreement=round(agreement, 4), model_calls=round(calls, 2),
                     tokens_per_s=round(rows * gen_length / best, 1), speedup=round(exact_time / best, 2),
                     seconds=round(best, 3), median_seconds=round(float(np.median(took)), 3),
                     repeats=args.repeats, load_avg=round(os.getloadavg()[0], 2))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=MODEL, help="directory from benchmarks/train_task_model.py")
    p.add_argument("--gen_lengths", type=int, nargs="+", default=[64, 128])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    p.add_argument("--block_length", type=int, default=32)
    p.add_argument("--rows", type=int, default=128, help="held-out prompts at batch > 1")
    p.add_argument("--rows_batch1", type=int, default=32, help="held-out prompts at batch 1 (time-bound)")
    p.add_argument("--repeats", type=int, default=3, help="timed passes; the fastest counts")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--quick", action="store_true", help="16 prompts, batch 16, gen 64, exact vs the fastest")
    args = p.parse_args(argv)
    if args.quick:
        args.gen_lengths, args.batches, args.rows, args.repeats = [64], [16], 16, 1
    for name in ("rows", "rows_batch1", "repeats", "block_length"):
        if getattr(args, name) < 1:
            sys.exit(f"error: --{name}={getattr(args, name)}: expected a positive integer")
    if not os.path.isfile(os.path.join(args.model, "task.json")):
        sys.exit(f"error: --model={args.model!r} holds no task.json: expected a directory written by "
                 f"benchmarks/train_task_model.py")
    run(args)


if __name__ == "__main__":
    main()
