"""Block size of block diffusion at equal training FLOPs (`python -m llada_jax.experiments.block_size`).

`--config=configs/experiments/block_size.py` is the full run (block sizes 1, 4, 16 and
the full length, generation at gen_length 256); `...:reduced` a smoke of the pipeline for
the test suite (block 4 and the full length, 2 training steps each, a 4-token answer).
"""

import ml_collections

from llada_jax.config import experiment_mode


def get_config(mode: str = "full"):
    full = experiment_mode("block_size", mode)
    c = ml_collections.ConfigDict()
    c.mode = mode
    # The embedded corpus (the standard library's source), train/eval split by file.
    # seq_len = prompt_len + gen_length: the models train at the length they generate.
    c.data = ml_collections.ConfigDict(dict(
        vocab_size=512 if full else 384, tokenizer_bytes=1_000_000 if full else 60_000,
        train_bytes=3_000_000 if full else 20_000, eval_bytes=300_000 if full else 20_000,
        seq_len=288 if full else 8, eval_rows=32 if full else 2))
    c.model = ml_collections.ConfigDict(dict(d_model=64 if full else 16, n_layers=2 if full else 1))
    # 0 is the full length (LLaDA: the pre-training objective over L tokens); the others
    # train BD3-LM's objective over the 2L concatenation. Every run gets the same FLOPs.
    c.block_sizes = [1, 4, 16, 0] if full else [4, 0]
    c.train = ml_collections.ConfigDict(dict(
        flops_budget=2.5e12 if full else 3e6, batch_size=16 if full else 2, lr=3e-3, warmup_frac=0.05,
        eval_draws=8 if full else 1, seed=0))
    # Generation: continue held-out code (prompt_len tokens) for gen_length tokens, greedy;
    # accuracy: tokens equal to the held-out continuation.
    c.generate = ml_collections.ConfigDict(dict(
        prompt_len=32 if full else 4, gen_length=256 if full else 4, examples=16 if full else 2,
        llada_block_length=32 if full else 4, threshold=0.9,
        block_cache_threshold=full))  # also a block-cache row with the threshold
    c.lock()
    return c
