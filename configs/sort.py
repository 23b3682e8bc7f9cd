"""SFT on the checkable sort task of llada_jax.data.tasks: the prompt is 6 values of 20 and a
separator, the answer the sorted values and 2 EOS. Deliberately short (200 steps, about 30 s
on a 2-core CPU): it stops at about 18% greedy exact match, the start that
configs/rl_sort.py's diffu-GRPO improves on (the README's RL section has the numbers).

    python -m llada_jax.train --config=configs/sort.py --workdir=workdirs/sort
"""

from llada_jax.config import base_config, lock


def get_config():
    c = base_config()
    c.model.update(d_model=64, n_heads=4, n_kv_heads=4, n_layers=2, mlp_hidden_size=256,
                   vocab_size=24, embedding_size=24, max_sequence_length=64,
                   mask_token_id=23, eos_token_id=22, pad_token_id=22)
    # seq_len = task_items + 1 prompt tokens + the answer region (gen_length)
    c.data.update(kind="sft", source="synthetic", task="sort", task_items=6, task_values=20,
                  seq_len=6 + 1 + 8, batch_size=64, random_length_prob=0.0)
    c.optim.update(lr=3e-3, schedule="cosine", warmup_steps=20, final_lr_ratio=0.05, weight_decay=0.1)
    c.train.update(steps=200, log_every=50, eval_every=0, num_samples=0)
    c.checkpoint.update(every=200, keep=1)
    return lock(c)
