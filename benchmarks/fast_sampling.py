"""Speed versus quality of the samplers on a trained model, one JSON line per figure.

Trains configs/sort.py (SFT: sort 4 digits) once per generation length into
--workdir/sort_G (a finished run is reused), then samples the answers of held-out
prompts with: exact (steps = gen_length), threshold 0.9, prefix cache, dual cache, and
threshold 0.9 + dual cache, all semi-autoregressive with blocks of --block_length.
For each: task accuracy (exact match of the whole answer), token agreement with the
exact sampler, model calls, tokens/s and the speedup over exact.

    python benchmarks/fast_sampling.py                       # gen_length 64 and 128
    python benchmarks/fast_sampling.py --gen_lengths 64 --train_steps 100   # quick look
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

METHODS = {
    "exact": dict(),
    "threshold_0.9": dict(threshold=0.9),
    "prefix_cache": dict(cache="prefix"),
    "dual_cache": dict(cache="dual"),
    "threshold_0.9+dual_cache": dict(threshold=0.9, cache="dual"),
}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def emit(**fields):
    print(json.dumps(fields), flush=True)


def train(gen_length, args):
    from llada_jax.training import loop
    from llada_jax.config import load_config_file

    config = load_config_file(os.path.join(ROOT, "configs", "sort.py"))
    config.data.seq_len = config.data.task_items + 1 + gen_length
    if args.train_steps:
        config.train.steps = config.checkpoint.every = args.train_steps
    workdir = os.path.join(args.workdir, f"sort_{gen_length}")
    t = time.perf_counter()
    loop.train_and_evaluate(config, workdir)
    emit(figure="train", gen_length=gen_length, steps=config.train.steps, seconds=round(time.perf_counter() - t, 1))
    return config, workdir


def run(args):
    import jax

    from llada_jax import generate as cli
    from llada_jax.data import tasks
    from llada_jax.sampling import generate

    for gen_length in args.gen_lengths:
        config, workdir = train(gen_length, args)
        model, params, _, step = cli.load(workdir)
        d = config.data
        task = tasks.make_task(d.task, n_items=d.task_items, n_values=d.task_values,
                               vocab_size=config.model.vocab_size, seq_len=d.seq_len)
        ids, _ = task.rows(np.random.default_rng(12345), args.eval_rows)
        prompt = ids[:, : task.prompt_len]
        base = dict(steps=gen_length, gen_length=gen_length, block_length=min(args.block_length, gen_length),
                    mask_id=model.config.mask_token_id, eos_id=model.config.eos_token_id)
        exact_out, exact_time = None, None
        for name, extra in METHODS.items():
            kw = dict(base, **extra)
            out, stats = generate(model, params, prompt, return_stats=True, **kw)  # compiles
            jax.block_until_ready(out)
            t = time.perf_counter()
            out, stats = generate(model, params, prompt, return_stats=True, **kw)
            jax.block_until_ready(out)
            took = time.perf_counter() - t
            out = np.asarray(out)
            if exact_out is None:
                exact_out, exact_time = out, took
            accuracy, token_accuracy = task.score(ids, out)
            agreement = float(np.mean(out[:, task.prompt_len:] == exact_out[:, task.prompt_len:]))
            emit(figure="fast_sampling", method=name, gen_length=gen_length, block_length=base["block_length"],
                 batch=args.eval_rows, train_steps=step, accuracy=round(accuracy, 4),
                 token_accuracy=round(token_accuracy, 4), agreement_with_exact=round(agreement, 4),
                 model_calls=stats["model_calls"], tokens_per_s=round(args.eval_rows * gen_length / took, 1),
                 speedup=round(exact_time / took, 2))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gen_lengths", type=int, nargs="+", default=[64, 128])
    p.add_argument("--block_length", type=int, default=32)
    p.add_argument("--eval_rows", type=int, default=64)
    p.add_argument("--train_steps", type=int, default=0, help="0: the config's")
    p.add_argument("--workdir", default=os.path.join("workdirs", "fast_sampling"))
    run(p.parse_args())


if __name__ == "__main__":
    main()
