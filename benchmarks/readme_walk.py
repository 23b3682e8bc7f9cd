"""The README's workflow, top to bottom, as a new user runs it on this CPU: one JSON line per
command with its wall time and exit status, in a fresh clone (`--clone`, made by the caller
with `git clone`; every path below is inside it).

    d=$(mktemp -d) && git clone -q . $d/p && python benchmarks/readme_walk.py --clone=$d/p

`python` in the README is the clone's `.venv/bin/python` (what `make demo` creates). Commands
for checkpoints that are not on this machine (LLaDA-8B, Qwen) or hardware it lacks (GPUs,
pods) are left out; the CPU-sized stand-ins are the README's own (the tiny run, its export as
the Hugging Face folder). Long defaults are shortened where the line says so (`steps`).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import time

CHAT = "\n".join(json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]})
                 for q, a in [("def add(a, b):", "return a + b"), ("import", "os"), ("print(", "'hi')")] * 8) + "\n"

STEPS = [
    ("make demo", "make demo"),
    ("train tiny (10 steps)", "PY -m llada_jax.train --config=configs/tiny.py --workdir=runs/tiny --config.train.steps=10 "
     "--config.optim.warmup_steps=2 --config.optim.decay_steps=2 --config.train.eval_every=0 "
     "--config.data.max_bytes=100000"),
    ("print the resolved config", "PY -m llada_jax.train --config=configs/tiny.py --workdir=runs/x --print_config"),
    ("SFT from the tiny run (inherits shape and tokenizer; 20 steps)",
     "PY -m llada_jax.train --config=configs/sft.py --workdir=runs/sft --config.train.init_from=runs/tiny "
     "--config.data.train_jsonl=chat.jsonl --config.data.eval_jsonl=chat.jsonl --config.train.steps=20 "
     "--config.optim.warmup_steps=2 --config.optim.decay_steps=2 --config.train.eval_every=0"),
    ("prepare_data", "PY -m llada_jax.prepare_data --inputs='configs/*.py' --out=prepared "
     "--tokenizer=runs/tiny/tokenizer.model"),
    ("train on the prepared folder (20 steps)", "PY -m llada_jax.train --config=configs/tiny.py --workdir=runs/prepared "
     "--config.data.source=prepared --config.data.path=prepared --config.train.eval_every=0 "
     "--config.train.steps=20 --config.optim.warmup_steps=2 --config.optim.decay_steps=2"),
    ("plan, 8B LoRA on one device", "PY -m llada_jax.plan --config=configs/llada_8b.py --config.lora.rank=16 "
     "--config.data.kind=sft --config.data.source=jsonl --devices=1 --config.data.seq_len=2048 "
     "--config.data.batch_size=1"),
    ("plan, 8B on 256 devices", "PY -m llada_jax.plan --config=configs/llada_8b.py --devices=256"),
    ("plan, tiny on 8 devices", "PY -m llada_jax.plan --config=configs/tiny.py --devices=8 --config.mesh.data=2 "
     "--config.mesh.fsdp=4"),
    ("generate", 'PY -m llada_jax.generate --workdir=runs/tiny --prompt="def " --gen_length=32 --block_length=16 '
     "--threshold=0.9"),
    ("generate, infill", 'PY -m llada_jax.generate --workdir=runs/tiny --prompt="import <mask:3>" --gen_length=0'),
    ("generate, JSONL batch", "printf '{\"prompt\": \"def \"}\\n{\"prompt\": \"import\", \"temperature\": 0.7, "
     "\"seed\": 1}\\n' > prompts.jsonl && PY -m llada_jax.generate --workdir=runs/tiny --prompts_jsonl=prompts.jsonl "
     "--out=answers.jsonl --gen_length=16 --block_length=8 --batch_size=8"),
    ("serve + one completion", "SERVE"),
    ("lm-eval, the local task", "PY -m llada_jax.evaluation --model llada_jax --tasks python_next --include_path "
     "examples/lm_eval --model_args workdir=runs/tiny,mc_num=32,batch_size=8,is_check_greedy=False "
     "--output_path results"),
    ("block diffusion from the tiny run (20 steps)", "PY -m llada_jax.train --config=configs/tiny.py --workdir=runs/block "
     "--config.train.init_from=runs/tiny --config.data.kind=block_diffusion --config.model.block_size=16 "
     "--config.train.block_warmup=4:5,8:10 --config.train.steps=20 --config.optim.warmup_steps=2 "
     "--config.optim.decay_steps=2 --config.train.eval_every=0 --config.data.max_bytes=100000"),
    ("generate, block diffusion", 'PY -m llada_jax.generate --workdir=runs/block --block_size=16 --prompt="def " '
     "--gen_length=64 --threshold=0.9"),
    ("RL: SFT on sort", "PY -m llada_jax.train --config=configs/sort.py --workdir=runs/sort"),
    ("RL: diffu-GRPO (300 steps)", "PY -m llada_jax.rl --config=configs/rl_sort.py --workdir=runs/sort_grpo "
     "--config.rl.init_from=runs/sort"),
    ("RL: VRPO pairs", "PY -m llada_jax.rl.pairs --config=configs/vrpo_sort.py --policy=runs/sort --out=pairs.jsonl"),
    ("RL: VRPO", "PY -m llada_jax.rl --config=configs/vrpo_sort.py --workdir=runs/sort_vrpo "
     "--config.rl.init_from=runs/sort --config.rl.pairs=pairs.jsonl"),
    ("export", "PY -m llada_jax.export --workdir=runs/tiny --out=runs/tiny-hf --dtype=float32"),
    ("LoRA from the export (inherited, 20 steps)", "PY -m llada_jax.train --config=configs/sft.py --workdir=runs/lora "
     "--config.train.init_from=runs/tiny-hf --config.lora.rank=8 --config.data.train_jsonl=chat.jsonl "
     "--config.data.eval_jsonl=chat.jsonl --config.train.steps=20 --config.optim.warmup_steps=2 "
     "--config.optim.decay_steps=2 --config.train.eval_every=0"),
    ("export LoRA merged", "PY -m llada_jax.export --workdir=runs/lora --out=runs/lora-merged --dtype=float32"),
    ("list the config fields", "PY -m llada_jax.config configs/sort.py"),
]


def serve(py, env, clone):
    """Start the server on a free port, send one completion, stop it with SIGTERM."""
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([py, "-m", "llada_jax.serve", "--workdir=runs/tiny", f"--port={port}", "--slots=8",
                             "--buckets=128,256", "--block_width=32"], cwd=clone, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        body = json.dumps({"model": "tiny", "prompt": "def ", "max_tokens": 32, "steps": 32}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/completions", body,
                                     {"Content-Type": "application/json"})
        text = json.loads(urllib.request.urlopen(req, timeout=300).read())["choices"][0]["text"]
        return 0, repr(text)[:200]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--clone", required=True)
    args = ap.parse_args()
    clone = os.path.abspath(args.clone)
    py = os.path.join(clone, ".venv", "bin", "python")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    with open(os.path.join(clone, "chat.jsonl"), "w") as f:
        f.write(CHAT)
    for name, cmd in STEPS:
        t = time.time()
        if cmd == "SERVE":
            rc, tail = serve(py, env, clone)
        else:
            p = subprocess.run(cmd.replace("PY ", py + " "), shell=True, cwd=clone, env=env, capture_output=True,
                               text=True)
            rc, tail = p.returncode, (p.stdout + p.stderr).strip().splitlines()[-1:] or [""]
            tail = tail[0][:300]
        print(json.dumps({"figure": "readme_command", "name": name, "command": cmd.replace("PY ", "python "),
                          "rc": rc, "wall_s": round(time.time() - t, 1), "last_line": tail,
                          "load_avg_1m": round(os.getloadavg()[0], 2)}), flush=True)


if __name__ == "__main__":
    main()
