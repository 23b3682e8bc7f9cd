"""Peak host memory (ru_maxrss) of exporting and importing a model of about 1 GB.

Each figure runs in a fresh subprocess; the parent reads the child's peak resident set
from os.wait4. Prints one JSON line per figure. The model (float32, ~268M parameters,
~1.07 GB) lives in host memory on a CPU-only machine, so "device" arrays count towards
RSS too: the interesting number is the peak minus the model-holding baseline, which
should be about one tensor (the largest, the 32768 x 1024 output head: 134 MB fp32).

    python benchmarks/interop.py [--workdir=/tmp/interop] [--d_model=1024 --n_layers=12]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

CHILD = r"""
import json, os, sys, time
import jax
from llada_jax.interop import hf
from llada_jax.model import LLaDAConfig, init_params, param_count
cfg = LLaDAConfig(**json.loads(sys.argv[2]))
what, path = sys.argv[1], sys.argv[3]
t = time.time()
if what in ("baseline", "export"):
    # Leaf by leaf from numpy, so creating the model peaks at model + one leaf (a jitted
    # init would peak near twice the model and hide the export's own overhead).
    import numpy as np
    shapes = jax.eval_shape(lambda: init_params(cfg, jax.random.key(0), seq_len=1))
    rng = np.random.default_rng(0)
    params = jax.tree_util.tree_map(
        lambda s: jax.device_put(rng.standard_normal(s.shape, np.float32) * np.float32(0.02)), shapes)
    jax.block_until_ready(params)
    t = time.time()
    if what == "export":
        hf.save_pretrained(cfg, params, path, dtype="float32", max_shard_size="500MB")
elif what == "runtime":  # python + jax + llada_jax, no model
    params = jax.numpy.zeros(1)
elif what == "import":
    cfg, params = hf.load_pretrained(path)
    jax.block_until_ready(params)
print(json.dumps({"seconds": round(time.time() - t, 2), "params": param_count(params)}))
"""


def run(what, config, path):
    proc = subprocess.Popen([sys.executable, "-c", CHILD, what, json.dumps(config), path],
                            stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"{what} failed with exit code {proc.returncode}")
    info = json.loads(out.strip().splitlines()[-1])
    return usage.ru_maxrss * 1024, info  # Linux reports KiB


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", default="/tmp/interop")
    ap.add_argument("--d_model", type=int, default=1024)
    ap.add_argument("--n_layers", type=int, default=12)
    args = ap.parse_args()
    config = dict(d_model=args.d_model, n_heads=args.d_model // 64, n_kv_heads=args.d_model // 64,
                  n_layers=args.n_layers, mlp_hidden_size=4 * args.d_model, vocab_size=32768,
                  embedding_size=32768, mask_token_id=32767, eos_token_id=32766, pad_token_id=32766)
    path = os.path.join(args.workdir, "hf")
    os.makedirs(args.workdir, exist_ok=True)
    runtime_rss, _ = run("runtime", config, path)
    base_rss, info = run("baseline", config, path)
    model_bytes = 4 * info["params"]
    common = {"model_bytes": model_bytes, "params": info["params"], "dtype": "float32"}
    print(json.dumps({"figure": "runtime_peak_rss", "what": "python + jax imported, no model",
                      "peak_rss_bytes": runtime_rss, **common}), flush=True)
    print(json.dumps({"figure": "baseline_peak_rss", "what": "create the model leaf by leaf and hold it",
                      "peak_rss_bytes": base_rss, **common}), flush=True)
    rss, info = run("export", config, path)
    files = sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path) if f.endswith(".safetensors"))
    print(json.dumps({"figure": "export_peak_rss", "what": "create as baseline, then save_pretrained (float32, 500MB shards)",
                      "peak_rss_bytes": rss, "over_baseline_bytes": rss - base_rss, "files_bytes": files,
                      "seconds": info["seconds"], **common}), flush=True)
    rss, info = run("import", config, path)
    print(json.dumps({"figure": "import_peak_rss", "what": "load_pretrained onto the CPU device",
                      "peak_rss_bytes": rss, "over_model_bytes": rss - model_bytes,
                      "over_model_and_runtime_bytes": rss - model_bytes - runtime_rss,
                      "seconds": info["seconds"], **common}), flush=True)


if __name__ == "__main__":
    main()
