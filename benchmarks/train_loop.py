"""Steps per second of the real training loop (`llada_jax.training.loop.train_and_evaluate`),
one JSON line per figure.

    python benchmarks/train_loop.py [--config=configs/tiny.py] [--steps=200] [--log_every=50]

The config's model on synthetic data (no tokenizer to train), no evaluation, samples or
periodic checkpoints: the loop's own overhead (batches, dispatch, metrics to the host,
logging) around the compiled step. One run compiles; the figure is the mean of `--repeats`
further runs in the same process (fresh workdirs, the compiled step reused), including
their start-up (state init, the final checkpoint).
"""

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402

from llada_jax import config as config_lib  # noqa: E402
from llada_jax.training import loop  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/tiny.py")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--log_every", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args()
    c = config_lib.load_config_file(a.config)
    c.data.update(source="synthetic", random_length_prob=0.0)
    c.model.update(mask_token_id=c.model.vocab_size - 1, eos_token_id=c.model.vocab_size - 2,
                   pad_token_id=c.model.vocab_size - 2)
    c.train.update(steps=a.steps, log_every=a.log_every, eval_every=0, num_samples=0, peak_flops=1e9)
    c.checkpoint.update(every=0, async_save=True)
    times = []
    with tempfile.TemporaryDirectory() as d:
        for i in range(a.repeats + 1):
            t = time.perf_counter()
            loop.train_and_evaluate(c, os.path.join(d, f"run{i}"), devices=jax.devices()[:1])
            times.append(time.perf_counter() - t)
    run_s = sum(times[1:]) / a.repeats
    print(json.dumps({"figure": "train_loop", "config": a.config, "steps": a.steps, "log_every": a.log_every,
                      "batch": c.data.batch_size, "seq_len": c.data.seq_len, "first_run_s": round(times[0], 2),
                      "run_s": round(run_s, 3), "steps_per_s": round(a.steps / run_s, 1)}), flush=True)


if __name__ == "__main__":
    main()
