"""Block size in block diffusion (BD3-LM), in miniature: the same model size, data (the
embedded standard-library corpus) and training FLOPs for block sizes 1, 4, 16 and the
full length (LLaDA), then
- held-out bits per token: each objective's ELBO (BD3-LM's block loss, which for block 1
  is the autoregressive NLL in expectation; LLaDA's pre-training loss for the full length),
  averaged over noise draws;
- generation on a checkable task, continuing held-out code (accuracy: tokens equal to the
  held-out continuation): model FLOPs per generated token (`model.flops.forward_flops`
  per model call), tokens/s and accuracy of block diffusion with its exact block cache
  (`sampling.block_cache`) against LLaDA's exact sampler and Fast-dLLM's dual cache with
  a confidence threshold on the full-length model.
One JSON line per row (block_size, sampler, gen_length, bits_per_token, flops_per_token,
tokens_per_s, accuracy, ...), results.json and block_size.png in --out.

    python -m llada_jax.experiments.block_size --out=/tmp/block_size
    python -m llada_jax.experiments.block_size --config=configs/experiments/block_size.py:reduced --out=/tmp/bs
"""

from __future__ import annotations

import json
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from llada_jax.experiments import experiment_run, optim_config, random_batches, run_rows, start_state
from llada_jax.experiments.scaling import prepare_data, size_config
from llada_jax.model import flops, init_params
from llada_jax.sampling import sampler
from llada_jax.training import step


def train_block_model(mcfg, block_size, rows, t, seq_len):
    """(model, params, steps, FLOPs per step): BD3-LM's objective (block_size > 0) over 2L
    or LLaDA's pre-training (0), with steps = the FLOPs budget / FLOPs per step."""
    full = block_size == 0
    tokens = seq_len if full else 2 * seq_len  # BD3-LM runs the model on [x_t, x_0]
    fps = flops.train_flops_per_token(mcfg, tokens) * tokens * t.batch_size
    steps = max(2, int(round(t.flops_budget / fps)))
    built, st, step_fn = experiment_run(
        mcfg.replace(block_size=block_size), "pretrain" if full else "block_diffusion",
        optim=optim_config(t.lr, max(1, int(t.warmup_frac * steps))), steps=steps, batch_size=t.batch_size,
        seq_len=seq_len)
    state = start_state(built, init_params(built.model_config, jax.random.PRNGKey(t.seed)), t.seed + 1)
    state = run_rows(step_fn, state, random_batches(rows, t.batch_size, t.seed), steps)
    return built.model, state["params"], st, steps, fps


def bits_per_token(params, st, rows, draws, batch_size):
    """The objective's held-out loss (an upper bound on the NLL, nats per token) in bits,
    averaged over `draws` noise draws per row."""
    fn = jax.jit(lambda p, b, r: step.eval_loss(p, b, r, st))
    total, n = 0.0, 0
    for i in range(0, len(rows) - batch_size + 1, batch_size):
        batch = {"input_ids": jnp.asarray(rows[i:i + batch_size])}
        total += sum(float(fn(params, batch, jax.random.PRNGKey(1000 * i + d))) for d in range(draws))
        n += draws
    return total / n / math.log(2)


def sampler_rows(model, params, block_size, prompts, targets, g):
    """One row per sampler for this model: FLOPs per generated token, tokens/s, accuracy."""
    cfg, p, n = model.config, prompts.shape[1], g.gen_length
    common = dict(gen_length=n, temperature=0.0)  # the model's mask and EOS ids
    runs = []
    if block_size:
        runs.append(("block_cache", None, dict(steps=block_size, block_length=block_size)))
        if g.block_cache_threshold:
            runs.append(("block_cache", g.threshold, dict(steps=block_size, block_length=block_size,
                                                          threshold=g.threshold)))
    else:
        bl = g.llada_block_length
        runs.append(("llada_exact", None, dict(steps=n, block_length=bl)))
        runs.append(("fast_dllm_dual_threshold", g.threshold, dict(steps=n, block_length=bl, threshold=g.threshold,
                                                                  cache="dual")))
    out = []
    for name, threshold, kw in runs:
        sampler.generate(model, params, prompts, return_stats=True, **common, **kw)  # compile
        start = time.perf_counter()
        ids, stats = sampler.generate(model, params, prompts, return_stats=True, **common, **kw)
        ids = np.asarray(ids)
        seconds = time.perf_counter() - start
        if name == "block_cache":
            row_flops = stats["flops"]
        else:
            t, bl = p + n, kw["block_length"]
            full_pass = flops.forward_flops(cfg, t, t, outputs=bl)
            if name == "llada_exact":
                row_flops = stats["model_calls"] * full_pass
            else:  # one full pass per block, then the block alone against the dual cache
                blocks = n // bl
                row_flops = blocks * full_pass + (stats["model_calls"] - blocks) * flops.forward_flops(cfg, bl, t, bl)
        out.append({"sampler": name, "threshold": threshold, "gen_length": n, "flops_per_token": row_flops / n,
                    "model_calls": stats["model_calls"], "tokens_per_s": prompts.shape[0] * n / seconds,
                    "accuracy": float(np.mean(ids[:, p:] == targets))})
    return out


def run(config, out_dir: str) -> dict:
    d, t, g = config.data, config.train, config.generate
    tok, train_rows, eval_rows = prepare_data(config, out_dir)
    vocab = max(d.vocab_size, tok.vocab_size)
    mcfg = size_config(config.model.d_model, config.model.n_layers, tok, d.seq_len, vocab)
    prompts = eval_rows[:g.examples, :g.prompt_len]
    targets = eval_rows[:g.examples, g.prompt_len:g.prompt_len + g.gen_length]
    results = {"config": config.to_dict(), "rows": []}
    for block_size in config.block_sizes:
        start = time.perf_counter()
        model, params, st, steps, fps = train_block_model(mcfg, block_size, train_rows, t, d.seq_len)
        bits = bits_per_token(params, st, eval_rows, t.eval_draws, min(len(eval_rows), t.batch_size))
        for row in sampler_rows(model, params, block_size, prompts, targets, g):
            row = {"block_size": block_size or d.seq_len, "full_length": block_size == 0, **row,
                   "bits_per_token": bits, "train_steps": steps, "train_flops": steps * fps,
                   "train_seconds": time.perf_counter() - start}
            results["rows"].append(row)
            print(json.dumps(row), flush=True)
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    plot(results, os.path.join(out_dir, "block_size.png"))
    return results


def plot(results, path: str | None = None):
    """Held-out bits/token per block size; accuracy against model FLOPs per generated token."""
    import matplotlib

    if path is not None:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["rows"]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4))
    sizes = sorted({(r["block_size"], r["full_length"]) for r in rows})
    ax.bar(range(len(sizes)), [next(r["bits_per_token"] for r in rows if (r["block_size"], r["full_length"]) == s)
                               for s in sizes])
    ax.set_xticks(range(len(sizes)), [f"L={s[0]} (LLaDA)" if s[1] else f"block {s[0]}" for s in sizes])
    ax.set_ylabel("held-out bits per token (ELBO)")
    ax.set_title("Equal training FLOPs")
    for r in rows:
        label = f"{r['sampler']}{'' if r['threshold'] is None else ' thr'} (block {r['block_size']})"
        bx.scatter(r["flops_per_token"], 100 * r["accuracy"], label=label)
    bx.set_xscale("log")
    bx.set_xlabel(f"model FLOPs per generated token (gen_length {rows[0]['gen_length']})")
    bx.set_ylabel("continuation token accuracy (%)")
    bx.legend(fontsize=6)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
        plt.close(fig)
    return fig


def main(argv=None):
    from absl import app, flags
    from ml_collections import config_flags

    config_flags.DEFINE_config_file("config", "configs/experiments/block_size.py", "experiment config")
    flags.DEFINE_string("out", "block_size_out", "output directory (results.json, block_size.png)")
    def _main(_):
        run(flags.FLAGS.config, flags.FLAGS.out)

    app.run(_main, argv=argv)


if __name__ == "__main__":
    main()
