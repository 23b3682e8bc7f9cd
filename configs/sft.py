"""SFT on chat JSONL (the prompt is never masked, the answer is), initialised from a
pre-training checkpoint.

Use: `--config=configs/sft.py --config.data.train_jsonl=chat.jsonl
--config.train.init_from=BASE` (a workdir, or a Hugging Face model folder). The model (family,
shape, special ids) and the tokenizer come from BASE (`llada_jax.training.inherit`): no
`--config.model.*` flag is needed; `--config.data.tokenizer` picks another tokenizer.
"""

from llada_jax.config import base_config, lock


def get_config():
    c = base_config()
    c.data.update(kind="sft", source="jsonl", seq_len=128, batch_size=16, random_length_prob=0.0)
    c.optim.update(lr=1e-3,  # tiny model; the 8B Instruct run used 2.5e-5
                   schedule="wsd", warmup_steps=20, decay_steps=100, final_lr_ratio=0.1,
                   weight_decay=0.1, clip_norm=1.0)
    c.train.update(steps=500, log_every=25, eval_every=250, eval_batches=2)
    c.checkpoint.update(every=250, keep=2)
    return lock(c)
