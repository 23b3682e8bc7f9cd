"""A ~51M-parameter model (d_model 512, 10 layers, 16k vocabulary) for one GPU or a small slice."""

from llada_jax.config import base_config, lock


def get_config():
    c = base_config()
    c.model.update(d_model=512, n_heads=8, n_kv_heads=8, n_layers=10, mlp_hidden_size=1536,
                   vocab_size=16384, embedding_size=16384, max_sequence_length=1024,
                   dtype="bfloat16", param_dtype="float32")
    c.data.update(source="prepared", seq_len=1024, batch_size=64, random_length_prob=0.01)
    c.optim.update(lr=6e-4, schedule="wsd", warmup_steps=1000, decay_steps=5000, final_lr_ratio=0.1,
                   weight_decay=0.1, clip_norm=1.0)
    c.train.update(steps=50_000, log_every=100, eval_every=2000, eval_batches=20)
    c.checkpoint.update(every=2000, keep=3)
    return lock(c)
