"""`make demo`: a 0.86M-parameter masked diffusion LM learns to sort 8 digits (SFT on
the sort task of llada_jax.tasks: the answer is masked at random, the prompt never) in
about 2 minutes of a 2-core CPU.

    python -m llada_jax.demo [--workdir=workdirs/demo] [--config.train.steps=...]

A sequence is 8 digits, a separator, the digits sorted and 2 EOS pads (19 tokens).
"""

from llada_jax.config import base_config, lock


def get_config():
    c = base_config()
    c.model.update(d_model=128, n_heads=4, n_kv_heads=4, n_layers=4, mlp_hidden_size=384,
                   vocab_size=16, embedding_size=16, max_sequence_length=64,
                   mask_token_id=15, eos_token_id=14, pad_token_id=14)
    c.data.update(kind="sft", source="synthetic", task="sort", task_items=8, task_values=10,
                  seq_len=2 * 8 + 1 + 2, batch_size=64, random_length_prob=0.0)
    c.optim.update(lr=3e-3, schedule="cosine", warmup_steps=50, final_lr_ratio=0.05, weight_decay=0.1)
    c.train.update(steps=800, log_every=50, eval_every=0, num_samples=0)
    c.checkpoint.update(every=0, keep=1)
    return lock(c)
