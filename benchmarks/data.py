"""The prepared data path at scale, on this machine: one JSON line per figure.

    python benchmarks/data.py [--work=/tmp/llada_data_bench] [--sizes_mb=100,330]

The corpora are the .py files of the installed packages (no download), as JSONL
(`{"text": file}` per line) in 16 files: the first `size` MB of them, for each size.
Figures, per corpus: preparation throughput (MB/s of input, tokens/s) and peak RSS (the
process tree: the CLI and its pool), then a 20-step training run of configs/tiny.py on the
prepared data: peak RSS and the time from process start to the end of the first step.
Last, the loader's rows/s for configs/small.py shapes (batch 64 x 1024) against what its
train step consumes on this machine (rows per second at batch 1, one CPU device).
"""

import argparse
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import time

import psutil

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def build_corpus(out, size_mb, n_files=16):
    """JSONL files holding the first size_mb of the site-packages .py files (sorted)."""
    if os.path.isdir(out):
        return sorted(glob.glob(os.path.join(out, "*.jsonl")))
    os.makedirs(out + ".tmp", exist_ok=True)
    srcs = sorted(glob.glob(os.path.join(sys.prefix, "lib", "python3*", "site-packages", "**", "*.py"), recursive=True))
    budget, per_file, total, k = size_mb * 1e6, size_mb * 1e6 / n_files, 0, 0
    f = open(os.path.join(out + ".tmp", f"part-{k:02d}.jsonl"), "w")
    for src in srcs:
        with open(src, "rb") as g:
            text = g.read().decode("utf-8", "replace")
        line = json.dumps({"text": text}) + "\n"
        f.write(line)
        total += len(line)
        if total >= budget:
            break
        if total >= per_file * (k + 1):
            f.close()
            k += 1
            f = open(os.path.join(out + ".tmp", f"part-{k:02d}.jsonl"), "w")
    f.close()
    os.replace(out + ".tmp", out)
    return sorted(glob.glob(os.path.join(out, "*.jsonl")))


def run_measured(cmd, env=None, marker=None):
    """(seconds, peak RSS of the process tree in bytes, first stdout line holding marker)."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    proc, peak = psutil.Process(p.pid), 0
    import threading

    lines = []
    reader = threading.Thread(target=lambda: lines.extend(p.stdout), daemon=True)
    reader.start()
    while p.poll() is None:
        try:
            rss = sum(c.memory_info().rss for c in [proc, *proc.children(recursive=True)])
        except psutil.NoSuchProcess:
            rss = 0
        peak = max(peak, rss)
        time.sleep(0.1)
    reader.join()
    if p.returncode:
        raise SystemExit(f"{cmd} failed with {p.returncode}: {''.join(lines)[-2000:]}")
    found = next((ln for ln in lines if marker and marker in ln), None)
    return time.perf_counter() - t0, peak, found, lines


TRAIN = """
import time; t0 = time.time()
import sys, json
sys.path.insert(0, {root!r})
from llada_jax.training import loop
from configs.tiny import get_config
c = get_config()
c.data.update(source="prepared", path={path!r})
c.train.update(steps=20, eval_every=0, num_samples=0, log_every=10, peak_flops=1e9)
c.optim.update(warmup_steps=5, decay_steps=5)
c.checkpoint.update(every=0)
hook = lambda step, state, m: step == 1 and print("FIRST_STEP", time.time() - t0, flush=True)
loop.train_and_evaluate(c, {workdir!r}, hooks=[hook])
"""


def loader_vs_step(path, batches=20):
    import jax

    from configs.small import get_config
    from llada_jax.model import from_config
    from llada_jax.data import prepared
    from llada_jax.parallel import sharding
    from llada_jax.training import optimizer, step, train_state
    from llada_jax.data import tokenizer

    c = get_config()
    d = c.data
    tok = tokenizer.load_tokenizer(prepared.tokenizer_file(path))
    it = prepared.prepared_iterator(path, tok, seq_len=d.seq_len, batch_size=d.batch_size, seed=0,
                                    process_index=0, process_count=1, verify="size")
    next(it)
    t = time.perf_counter()
    for _ in range(batches):
        next(it)
    rows_s = batches * d.batch_size / (time.perf_counter() - t)
    # the train step of configs/small.py at batch 1 on one CPU device (batch 4 needs ~8 GB here)
    c.model.update(vocab_size=max(c.model.vocab_size, tok.vocab_size))
    mcfg = from_config.model_config(c, tok)
    from llada_jax.model import build

    model = build(mcfg)
    tx, schedule = optimizer.make_optimizer(c.optim, 100)
    mesh = sharding.make_mesh(dict(data=1, fsdp=1, tensor=1), jax.devices()[:1])
    _, shardings = train_state.state_shardings(model, tx, mesh)
    state = train_state.init_state(model, tx, mesh, 0, shardings)
    step_fn = step.compile_step(step.Static(model, tx, "pretrain", mcfg.mask_token_id, 1e-3, 0.0, 1, schedule),
                              mesh, shardings, {"input_ids": 2})
    b = sharding.global_batch({"input_ids": next(it)["input_ids"][:1]}, mesh, 1)
    state, m = step_fn(state, b)
    jax.block_until_ready(m)
    t = time.perf_counter()
    for _ in range(2):
        state, m = step_fn(state, b)
    jax.block_until_ready(m)
    step_rows_s = 2 / (time.perf_counter() - t)
    return {"figure": "loader_vs_train_step", "config": "configs/small.py", "seq_len": d.seq_len,
            "loader_batch": d.batch_size, "loader_rows_per_s": round(rows_s, 1), "read_threads": 4,
            "train_step_rows_per_s_cpu_batch1": round(step_rows_s, 2), "ratio": round(rows_s / step_rows_s, 1)}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--work", default="/tmp/llada_data_bench")
    p.add_argument("--sizes_mb", default="100,330")
    p.add_argument("--keep", action="store_true", help="keep the corpora and prepared data")
    args = p.parse_args()
    os.makedirs(args.work, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), JAX_PLATFORMS="cpu")
    sizes = [int(s) for s in args.sizes_mb.split(",")]
    corpus = build_corpus(os.path.join(args.work, f"corpus-{max(sizes)}"), max(sizes))
    tok_dir = os.path.join(args.work, "tok")
    if not os.path.exists(tok_dir + "/tokenizer.model"):
        from llada_jax.data import tokenizer

        tokenizer.train_sentencepiece(corpus[:1], tok_dir + "/tokenizer", 512, max_bytes=4_000_000, character_coverage=0.995)
    for size in sizes:
        files, total = [], 0
        for f in corpus:  # the first `size` MB of the parts
            if total >= size * 1e6:
                break
            files.append(f)
            total += os.path.getsize(f)
        out = os.path.join(args.work, f"prepared-{size}")
        shutil.rmtree(out, ignore_errors=True)
        secs, peak, line, _ = run_measured(
            [sys.executable, "-m", "llada_jax.prepare_data", f"--inputs={','.join(files)}", f"--out={out}",
             f"--tokenizer={tok_dir}/tokenizer.model"], env=env, marker='"tokens"')
        tokens = int(re.search(r'"tokens": (\d+)', line)[1])
        print(json.dumps({"figure": "prepare", "corpus_mb": round(total / 1e6, 1), "files": len(files),
                          "seconds": round(secs, 1), "mb_per_s": round(total / 1e6 / secs, 2),
                          "tokens": tokens, "tokens_per_s": round(tokens / secs), "peak_rss_mb": round(peak / 2**20),
                          "workers": os.cpu_count()}), flush=True)
        workdir = os.path.join(args.work, f"train-{size}")
        shutil.rmtree(workdir, ignore_errors=True)
        secs, peak, line, _ = run_measured(
            [sys.executable, "-c", TRAIN.format(root=ROOT, path=out, workdir=workdir)], env=env, marker="FIRST_STEP")
        print(json.dumps({"figure": "train_20_steps", "config": "configs/tiny.py", "corpus_mb": round(total / 1e6, 1),
                          "tokens": tokens, "peak_rss_mb": round(peak / 2**20),
                          "first_step_s": round(float(re.search(r"FIRST_STEP ([\d.]+)", line)[1]), 1), "seconds": round(secs, 1)}), flush=True)
        shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(loader_vs_step(os.path.join(args.work, f"prepared-{max(sizes)}"))), flush=True)
    if not args.keep:
        shutil.rmtree(args.work, ignore_errors=True)


if __name__ == "__main__":
    main()
