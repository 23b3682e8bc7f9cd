"""Diffusion versus autoregressive at equal training FLOPs (`python -m llada_jax.experiments.scaling`).

`--config=configs/experiments/scaling.py` is the full run (about 15 CPU minutes on 2
cores); `--config=configs/experiments/scaling.py:reduced` the CI-sized check (a minute).
"""

import ml_collections

from llada_jax.config import experiment_mode


def get_config(mode: str = "full"):
    full = experiment_mode("scaling", mode)
    c = ml_collections.ConfigDict()
    c.mode = mode
    # The embedded corpus: the standard library's source, train/eval split by file.
    c.data = ml_collections.ConfigDict(dict(
        vocab_size=512 if full else 384, tokenizer_bytes=1_000_000 if full else 150_000,
        train_bytes=3_000_000 if full else 150_000, eval_bytes=200_000 if full else 60_000,
        seq_len=64 if full else 32, eval_rows=64 if full else 8))
    # Model sizes (d_model, n_layers); n_heads 4, mlp 4 x d_model. Each size is trained
    # once as a diffusion model and once as an autoregressive one, same steps and batch.
    c.sizes = [(32, 2), (64, 2), (96, 3)] if full else [(16, 1), (24, 1), (32, 1)]
    # Every run gets the same training FLOPs: steps = flops_budget / FLOPs per step.
    c.train = ml_collections.ConfigDict(dict(
        flops_budget=1.5e12 if full else 2.0e9, batch_size=16 if full else 8, lr=3e-3, warmup_frac=0.05,
        random_length_prob=0.01, evals=6 if full else 2, elbo_t_samples=8 if full else 2, seed=0))
    # Downstream: fill a masked line of held-out code of exactly `line_tokens` tokens,
    # given `prefix_tokens` before it (and for diffusion infilling `suffix_tokens` after).
    c.infill = ml_collections.ConfigDict(dict(examples=64 if full else 4, line_tokens=6,
                                              prefix_tokens=32 if full else 16, suffix_tokens=16 if full else 8))
    c.lock()
    return c
