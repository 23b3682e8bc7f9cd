"""A 1B-parameter LLaDA (the paper's 1B scaling shape: d_model 2048, 22 layers) with the
8B recipe scaled down."""

from llada_jax.config import base_config, lock


def get_config():
    c = base_config()
    c.model.update(d_model=2048, n_heads=32, n_kv_heads=32, n_layers=22, mlp_hidden_size=5632,
                   vocab_size=126464, embedding_size=126464, max_sequence_length=4096,
                   rope_theta=500000.0, mask_token_id=126336, eos_token_id=126081, pad_token_id=126081,
                   dtype="bfloat16", param_dtype="float32", remat_policy="full")
    c.mesh.update(data=1, fsdp=-1, tensor=1)
    c.data.update(source="prepared", seq_len=4096, batch_size=512, random_length_prob=0.01)
    c.optim.update(lr=4e-4, b1=0.9, b2=0.95, weight_decay=0.1, schedule="wsd", warmup_steps=2000,
                   decay_steps=10_000, final_lr_ratio=0.025, drop_step=60_000, drop_ratio=0.25,
                   clip_norm=1.0)
    c.train.update(steps=100_000, log_every=100, eval_every=5000, eval_batches=20, peak_flops=989e12)
    c.checkpoint.update(every=1000, keep=3)
    return lock(c)
