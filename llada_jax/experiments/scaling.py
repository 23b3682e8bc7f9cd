"""Diffusion versus autoregressive at equal training FLOPs, in miniature (the LLaDA paper's
LLaDA matches autoregressive baselines trained on the same data at the same FLOPs).

Each model size is trained twice on the embedded corpus (the standard library's source):
as a masked diffusion model and as an autoregressive model (`causal=True`), with the same
initial parameters, batches, optimizer and number of steps. Every run gets the same
training FLOPs (`config.train.flops_budget`; steps = budget / FLOPs per step, forward plus
backward, counted the same way for both kinds by `llada_jax.model.flops`).

Measured along training on held-out files, in bits per token:
- autoregressive: the exact NLL of each token given the ones before it;
- diffusion: the ELBO bound, the pre-training loss averaged over stratified t (an upper
  bound on the NLL).
Downstream check at the end: fill a masked line of held-out code (token accuracy and exact
match): the autoregressive model and the diffusion model from the prefix alone, and the
diffusion model also by infilling with the code after the line in view.

    python -m llada_jax.experiments.scaling --config=configs/experiments/scaling.py --out=/tmp/scaling
"""

from __future__ import annotations

import json
import os
import time

import jax
import numpy as np

from llada_jax.data import documents, pipeline
from llada_jax.sampling import sampler
from llada_jax.experiments import (ar_bits_per_token, diffusion_bits_per_token, flops_per_step, greedy_ar,
                                   model_for, random_batches, train_model)
from llada_jax.model import LLaDAConfig
from llada_jax.data.tokenizer import train_sentencepiece


def size_config(d_model: int, n_layers: int, tok, seq_len: int, vocab_size: int) -> LLaDAConfig:
    return LLaDAConfig(d_model=d_model, n_heads=4, n_kv_heads=4, n_layers=n_layers, mlp_hidden_size=4 * d_model,
                       vocab_size=vocab_size, embedding_size=vocab_size, max_sequence_length=max(256, seq_len),
                       rope_theta=10000.0, mask_token_id=tok.mask_id, eos_token_id=tok.eos_id,
                       pad_token_id=tok.eos_id)


def infill_examples(files, tok, *, examples, line_tokens, prefix_tokens, suffix_tokens, seed=0):
    """(prefix (n, P), line (n, k), suffix (n, S)) int32: held-out lines of exactly k tokens
    with P tokens of code before and S after (a fixed random sample)."""
    found = []
    nl = tok.encode("\n")
    for doc in documents.iter_documents(files):
        lines = doc.split("\n")
        ids = tok.encode_batch(lines)  # each line once; the text around a line is joined from them
        for i in range(1, len(lines) - 1):
            if len(ids[i]) != line_tokens or not lines[i].strip() or lines[i].strip().startswith("#"):
                continue
            before, j = [], i
            while len(before) < prefix_tokens and j > 0:
                j -= 1
                before = ids[j] + nl + before
            after, j = [], i
            while len(after) < suffix_tokens and j < len(lines) - 1:
                j += 1
                after = after + nl + ids[j]
            if len(before) >= prefix_tokens and len(after) >= suffix_tokens:
                found.append((before[-prefix_tokens:], ids[i], after[:suffix_tokens]))
        if len(found) >= 20 * examples:
            break
    if len(found) < examples:
        raise ValueError(f"only {len(found)} held-out lines of {line_tokens} tokens; lower infill.examples")
    pick = np.random.default_rng(seed).choice(len(found), examples, replace=False)
    return tuple(np.asarray([found[i][j] for i in pick], np.int32) for j in range(3))


def fill_lines(kind, model, params, tok, prefix, line, suffix) -> dict:
    """Token accuracy and exact match of the filled lines, per way of asking."""
    k = line.shape[1]
    got = {}
    if kind == "autoregressive":
        got["prefix_only"] = greedy_ar(model, params, prefix, k)
    else:
        kw = dict(temperature=0.0, mask_id=tok.mask_id, eos_id=tok.eos_id, eot_id=tok.eot_id)
        out = sampler.generate(model, params, prefix, steps=k, gen_length=k, block_length=k, **kw)
        got["prefix_only"] = np.asarray(out)[:, prefix.shape[1]:]
        holes = np.concatenate([prefix, np.full_like(line, tok.mask_id), suffix], axis=1)
        out = sampler.generate(model, params, holes, steps=k, gen_length=0, **kw)
        got["infill"] = np.asarray(out)[:, prefix.shape[1]:prefix.shape[1] + k]
    return {way: {"token_accuracy": float(np.mean(g == line)), "exact_match": float(np.mean(np.all(g == line, 1)))}
            for way, g in got.items()}


def prepare_data(config, out_dir: str):
    d = config.data
    os.makedirs(out_dir, exist_ok=True)
    tok_path = os.path.join(out_dir, "tokenizer.model")
    if os.path.exists(tok_path):
        from llada_jax.data.tokenizer import load_tokenizer

        tok = load_tokenizer(tok_path)
    else:
        tok = train_sentencepiece(documents.stdlib_files("train"), os.path.join(out_dir, "tokenizer"), d.vocab_size,
                                  max_bytes=d.tokenizer_bytes, character_coverage=0.995)
    cache = os.path.join(out_dir, "data_cache")
    train_rows = pipeline.pretrain_rows(documents.stdlib_files("train"), tok, d.seq_len, max_bytes=d.train_bytes,
                                    cache_dir=cache)
    eval_rows = pipeline.pretrain_rows(documents.stdlib_files("eval"), tok, d.seq_len, max_bytes=d.eval_bytes,
                                   cache_dir=cache)
    if len(eval_rows) < d.eval_rows:
        raise ValueError(f"{len(eval_rows)} held-out rows < data.eval_rows={d.eval_rows}; raise data.eval_bytes")
    return tok, train_rows, eval_rows[np.random.default_rng(0).choice(len(eval_rows), d.eval_rows, replace=False)]


def run(config, out_dir: str) -> dict:
    """Train every (size, kind), write results.json and loss_vs_flops.png into out_dir."""
    d, t = config.data, config.train
    tok, train_rows, eval_rows = prepare_data(config, out_dir)
    vocab = max(d.vocab_size, tok.vocab_size)
    infill = infill_examples(documents.stdlib_files("eval"), tok, **config.infill.to_dict())
    results = {"config": config.to_dict(), "train_tokens_available": int(train_rows.size), "runs": []}
    for d_model, n_layers in config.sizes:
        mcfg = size_config(d_model, n_layers, tok, d.seq_len, vocab)
        fps = flops_per_step(mcfg, t.batch_size, d.seq_len)
        steps = max(2, int(round(t.flops_budget / fps)))
        every = max(1, steps // t.evals)
        for kind in ("autoregressive", "diffusion"):
            curve, start = [], time.perf_counter()
            rng = jax.random.PRNGKey(t.seed + 7)
            eval_model = model_for(kind, mcfg)  # equal to the one train_model builds

            def evaluate(step, params, kind=kind, curve=curve, eval_model=eval_model, fps=fps):
                bits = (ar_bits_per_token(eval_model, params, eval_rows) if kind == "autoregressive" else
                        diffusion_bits_per_token(eval_model, params, eval_rows, rng=rng, num_t=t.elbo_t_samples))
                curve.append({"step": step, "flops": step * fps, "bits_per_token": bits})

            model, params, losses = train_model(
                kind, mcfg, random_batches(train_rows, t.batch_size, t.seed), steps=steps, lr=t.lr, seed=t.seed,
                warmup_steps=max(1, int(t.warmup_frac * steps)), callback=evaluate, callback_every=every,
                random_length_prob=t.random_length_prob if kind == "diffusion" else 0.0)
            run = {"kind": kind, "d_model": d_model, "n_layers": n_layers, "params": _count(params),
                   "steps": steps, "flops_per_step": fps, "train_flops": steps * fps, "curve": curve,
                   "final_train_loss": float(np.mean(losses[-10:])), "downstream": fill_lines(kind, model, params, tok, *infill),
                   "seconds": time.perf_counter() - start}
            results["runs"].append(run)
            print(f"[scaling] d={d_model} L={n_layers} {kind}: {steps} steps, {run['train_flops']:.2e} FLOPs, "
                  f"eval {curve[-1]['bits_per_token']:.3f} bits/token, line fill {run['downstream']} "
                  f"({run['seconds']:.0f}s)", flush=True)
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    plot(results, os.path.join(out_dir, "loss_vs_flops.png"))
    return results


def _count(params) -> int:
    return int(sum(x.size for x in jax.tree_util.tree_leaves(params)))


def summary(results) -> str:
    """Markdown table: final eval bits/token and line-fill token accuracy per run."""
    lines = ["| size (d, layers) | params | train FLOPs | kind | eval bits/token | fill: prefix only | fill: infill |",
             "|---|---|---|---|---|---|---|"]
    for r in results["runs"]:
        ds = r["downstream"]
        infill = f"{100 * ds['infill']['token_accuracy']:.1f}%" if "infill" in ds else "n/a"
        lines.append(f"| {r['d_model']}, {r['n_layers']} | {r['params']:,} | {r['train_flops']:.2e} | {r['kind']} | "
                     f"{r['curve'][-1]['bits_per_token']:.3f} | {100 * ds['prefix_only']['token_accuracy']:.1f}% | "
                     f"{infill} |")
    return "\n".join(lines)


def plot(results, path: str | None = None):
    """Eval bits/token against training FLOPs (solid: autoregressive NLL, dashed: diffusion
    ELBO bound), and line-fill token accuracy per size. Returns the figure."""
    import matplotlib

    if path is not None:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4))
    sizes = sorted({(r["d_model"], r["n_layers"]) for r in results["runs"]})
    colors = dict(zip(sizes, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    for r in results["runs"]:
        size = (r["d_model"], r["n_layers"])
        xs = [p["flops"] for p in r["curve"]]
        ys = [p["bits_per_token"] for p in r["curve"]]
        style = "-" if r["kind"] == "autoregressive" else "--"
        ax.plot(xs, ys, style, marker="o", ms=3, color=colors[size],
                label=f"{'AR NLL' if style == '-' else 'diffusion ELBO'} d={size[0]} L={size[1]}")
    ax.set_xscale("log")
    ax.set_xlabel("training FLOPs")
    ax.set_ylabel("held-out bits per token")
    ax.set_title("Eval loss vs training FLOPs")
    ax.legend(fontsize=7)
    width, x = 0.27, np.arange(len(sizes))
    bars = [("autoregressive", "prefix_only", "AR (prefix)"), ("diffusion", "prefix_only", "diffusion (prefix)"),
            ("diffusion", "infill", "diffusion (infill)")]
    for i, (kind, way, label) in enumerate(bars):
        vals = [100 * next(r["downstream"][way]["token_accuracy"] for r in results["runs"]
                           if r["kind"] == kind and (r["d_model"], r["n_layers"]) == s) for s in sizes]
        bx.bar(x + (i - 1) * width, vals, width, label=label)
    bx.set_xticks(x, [f"d={s[0]} L={s[1]}" for s in sizes])
    bx.set_ylabel("masked-line token accuracy (%)")
    bx.set_title("Downstream: fill a masked line of code")
    bx.legend(fontsize=7)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
        plt.close(fig)
    return fig


def main(argv=None):
    from absl import app, flags
    from ml_collections import config_flags

    config_flags.DEFINE_config_file("config", "configs/experiments/scaling.py", "experiment config")
    flags.DEFINE_string("out", "scaling_out", "output directory (results.json, loss_vs_flops.png)")

    def _main(_):
        print(summary(run(flags.FLAGS.config, flags.FLAGS.out)))

    app.run(_main, argv=argv)


if __name__ == "__main__":
    main()
