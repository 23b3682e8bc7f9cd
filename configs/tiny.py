"""The embedded default: a ~0.43M-parameter model trained on the stdlib corpus in minutes
on a 2-core CPU (`make demo`)."""

from llada_jax.config import base_config, lock


def get_config():
    c = base_config()
    # vocab_size unset: 512 for the tokenizer it trains, or the size of the one it is given
    # (a prepared folder's, data.tokenizer; llada_jax.training.inherit)
    c.model.update(d_model=96, n_heads=4, n_kv_heads=4, n_layers=3, mlp_hidden_size=256, max_sequence_length=256)
    c.data.update(source="stdlib", seq_len=64, batch_size=16, random_length_prob=0.01, max_bytes=3_000_000)
    c.optim.update(lr=3e-3, schedule="wsd", warmup_steps=50, decay_steps=300, final_lr_ratio=0.1,
                   weight_decay=0.1, clip_norm=1.0)
    c.train.update(steps=2400, log_every=50, eval_every=800, eval_batches=4, num_samples=2,
                   sample_prompt_len=16, sample_gen_length=32, sample_steps=32)
    c.checkpoint.update(every=800, keep=2)
    return lock(c)
