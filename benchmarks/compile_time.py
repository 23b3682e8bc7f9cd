"""Time to the first train step and to the first sampled tokens, with JAX's persistent
compilation cache off, fresh (an empty cache folder) and on a rerun (the folder the fresh
run filled), one JSON line each.

    python benchmarks/compile_time.py [--what=tiny,demo,generate] [--modes=off,fresh,rerun]

tiny / demo: `python -m llada_jax.train --config=configs/{tiny,demo}.py
--config.train.steps=1 --config.optim.decay_steps=0` (one step: no decay phase) in a new
workdir each time; `wall_s` is the whole command, `first_step_s` the time from
its start to the first logged step (metrics.jsonl written). generate:
`python -m llada_jax.generate` on the tiny run's checkpoint; `wall_s` is the whole
command, which prints the sampled text at its end. The cache folder is set through
$LLADA_JAX_CACHE_DIR ("off": no cache), as a user would.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(cmd, cache, workdir=None):
    env = dict(os.environ, LLADA_JAX_CACHE_DIR=cache, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    t = time.time()
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.time() - t
    if p.returncode:
        raise SystemExit(f"error: {' '.join(cmd)} exited {p.returncode}: {p.stderr[-2000:]}")
    first = None
    if workdir is not None:
        first = os.path.getmtime(os.path.join(workdir, "metrics.jsonl")) - t
    return wall, first


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--what", default="tiny,demo,generate")
    ap.add_argument("--modes", default="off,fresh,rerun")
    a = ap.parse_args()
    what, modes = a.what.split(","), a.modes.split(",")
    with tempfile.TemporaryDirectory() as d:
        cache = os.path.join(d, "cache")
        n = 0
        tiny_workdir = None
        for mode in modes:
            c = "off" if mode == "off" else cache
            if mode == "fresh" and os.path.exists(cache):
                raise SystemExit("error: --modes: 'fresh' must come before 'rerun'")
            for w in what:
                if w in ("tiny", "demo") or (w == "generate" and tiny_workdir is None):
                    cfg = "tiny" if w == "generate" else w
                    n += 1
                    wd = os.path.join(d, f"run{n}")
                    wall, first = run([sys.executable, "-m", "llada_jax.train", f"--config=configs/{cfg}.py",
                                       f"--workdir={wd}", "--config.train.steps=1", "--config.optim.decay_steps=0"], c, wd)
                    if cfg == "tiny":
                        tiny_workdir = wd
                    if w != "generate":
                        print(json.dumps({"figure": "time_to_first_step", "config": f"configs/{w}.py", "cache": mode,
                                          "first_step_s": round(first, 2), "wall_s": round(wall, 2)}), flush=True)
                        continue
                wall, _ = run([sys.executable, "-m", "llada_jax.generate", f"--workdir={tiny_workdir}",
                               "--prompt=def f(x):", "--gen_length=32", "--steps=32"], c)
                print(json.dumps({"figure": "time_to_first_sample", "command": "python -m llada_jax.generate",
                                  "cache": mode, "gen_length": 32, "wall_s": round(wall, 2)}), flush=True)


if __name__ == "__main__":
    main()
