"""lm-eval `generate_until` throughput of the adapter (llada_jax.evaluation.harness) on a
local task: requests of mixed prompt lengths through `LLaDAEvalHarness.generate_until`,
one JSON line per figure (cold: first call, compiles included; warm: a second call).

    python benchmarks/eval_generate.py [--requests 64 --batch_size 8 --gen_length 32]
    PYTHONPATH=OTHER_CHECKOUT python benchmarks/eval_generate.py   # the same on other code

The model is a random tiny LLaDA with a small sentencepiece tokenizer trained here (the
figure is about batching, not answers); `code` names the checkout that ran.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import jax
import numpy as np


class _Req:
    def __init__(self, *args):
        self.args = args


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--batch_size", type=int, default=8)
    ap.add_argument("--gen_length", type=int, default=32)
    ap.add_argument("--block_length", type=int, default=8)
    ap.add_argument("--steps", type=int, default=32)
    args = ap.parse_args()

    from llada_jax.data.tokenizer import train_sentencepiece
    from llada_jax.evaluation.harness import LLaDAEvalHarness
    from llada_jax.model import LLaDAConfig, build, init_params

    with tempfile.TemporaryDirectory() as d:
        corpus = os.path.join(d, "corpus.txt")
        with open(corpus, "w") as f:
            f.write("".join(f"{n} is {n % 10}. the cat sat on the mat {n}\n" for n in range(300)))
        tok = train_sentencepiece([corpus], os.path.join(d, "tok"), 300)
    cfg = LLaDAConfig.tiny(vocab_size=tok.vocab_size, embedding_size=tok.vocab_size, max_sequence_length=256, mask_token_id=tok.mask_id,
                           eos_token_id=tok.eos_id, pad_token_id=tok.eos_id)
    model, params = build(cfg), init_params(cfg, jax.random.key(0))
    rng = np.random.default_rng(0)
    contexts = [" ".join(f"{n} is {n % 10}." for n in rng.integers(10, 99, rng.integers(1, 12)))
                for _ in range(args.requests)]
    lm = LLaDAEvalHarness(model=model, params=params, tokenizer=tok, batch_size=args.batch_size,
                          mc_num=args.batch_size, gen_length=args.gen_length, block_length=args.block_length,
                          steps=args.steps)
    reqs = [_Req(c, {"until": []}) for c in contexts]
    code = os.path.dirname(os.path.dirname(os.path.abspath(__import__("llada_jax").__file__)))
    for phase in ("cold", "warm"):
        t = time.perf_counter()
        lm.generate_until(reqs)
        secs = time.perf_counter() - t
        print(json.dumps(dict(figure="lm_eval_generate_until_requests_per_s", phase=phase, code=code,
                              value=round(args.requests / secs, 2), seconds=round(secs, 2),
                              requests=args.requests, batch_size=args.batch_size, gen_length=args.gen_length,
                              block_length=args.block_length, steps=args.steps,
                              cpu_count=os.cpu_count())), flush=True)


if __name__ == "__main__":
    main()
