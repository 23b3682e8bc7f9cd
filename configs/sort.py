"""SFT on the checkable sort task of llada_jax.data.tasks: the prompt is 4 digits and a
separator, the answer the sorted digits padded with EOS. `benchmarks/fast_sampling.py`
trains it (a few minutes on a 2-core CPU) and measures the samplers on it.

    python -m llada_jax.train --config=configs/sort.py --workdir=workdirs/sort
"""

from llada_jax.config import base_config, lock


def get_config():
    c = base_config()
    c.model.update(d_model=128, n_heads=4, n_kv_heads=4, n_layers=4, mlp_hidden_size=384,
                   vocab_size=16, embedding_size=16, max_sequence_length=512,
                   mask_token_id=15, eos_token_id=14, pad_token_id=14)
    # seq_len = task_items + 1 prompt tokens + the answer region (gen_length)
    c.data.update(kind="sft", source="synthetic", task="sort", task_items=4, task_values=10,
                  seq_len=5 + 64, batch_size=32, random_length_prob=0.0)
    c.optim.update(lr=3e-3, schedule="cosine", warmup_steps=30, final_lr_ratio=0.05, weight_decay=0.1)
    c.train.update(steps=500, log_every=50, eval_every=0, num_samples=0)
    c.checkpoint.update(every=500, keep=1)
    return lock(c)
