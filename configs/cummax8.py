"""SFT on the checkable cummax task of llada_jax.data.tasks: the prompt is 8 digits and a
separator, the answer their running maximum (each answer digit is the max of the previous
one and the next prompt digit: a chain), then EOS up to the answer region's end
(64 or 128 tokens: `benchmarks/train_task_model.py` mixes both lengths). The model of
the speed-versus-quality table (`benchmarks/fast_sampling.py`).

    python benchmarks/train_task_model.py --out benchmarks/models/cummax8
"""

from llada_jax.config import base_config, lock


def get_config():
    c = base_config()
    c.model.update(d_model=128, n_heads=4, n_kv_heads=4, n_layers=3, mlp_hidden_size=384,
                   vocab_size=16, embedding_size=16, max_sequence_length=256,
                   mask_token_id=15, eos_token_id=14, pad_token_id=14)
    # seq_len = task_items + 1 prompt tokens + the answer region (gen_length); the
    # training script cycles through several answer regions (its --cycle).
    c.data.update(kind="sft", source="synthetic", task="cummax", task_items=8, task_values=10,
                  seq_len=9 + 64, batch_size=32, random_length_prob=0.0)
    c.optim.update(lr=3e-3, schedule="cosine", warmup_steps=40, final_lr_ratio=0.05, weight_decay=0.05)
    c.train.update(steps=600, log_every=50, eval_every=0, num_samples=0)
    return lock(c)
