"""LLaDA-8B pre-training: the published shape and the paper's recipe.

Recipe (LLaDA paper, section 2.3): AdamW, weight decay 0.1, global batch 1280 sequences of
4096 tokens (5.24M tokens per step); warmup-stable-decay: linear warmup to 4e-4 over
2000 steps, 4e-4 until 1.2T tokens, 1e-4 until 2.0T tokens, then linear decay to 1e-5
over the last 0.3T tokens (2.3T tokens in all); 1% of steps with a random length in
[1, 4096]. bf16 compute with fp32 master weights.
"""

from llada_jax.config import base_config, lock

TOKENS_PER_STEP = 1280 * 4096


def get_config():
    c = base_config()
    c.model.update(d_model=4096, n_heads=32, n_kv_heads=32, n_layers=32, mlp_hidden_size=12288,
                   vocab_size=126464, embedding_size=126464, max_sequence_length=4096,
                   rope_theta=500000.0, rms_norm_eps=1e-5,
                   mask_token_id=126336, eos_token_id=126081, pad_token_id=126081,
                   dtype="bfloat16", param_dtype="float32", remat_policy="full",
                   # memory: flash-style attention and the MLP over 1024-token chunks keep the
                   # paper's 5 x 4096 tokens per device (fsdp=256) at 12.6 GiB (llada_jax.plan)
                   attention="chunked", mlp_chunk=1024)
    c.mesh.update(data=1, fsdp=-1, tensor=1)
    c.data.update(source="prepared", seq_len=4096, batch_size=1280, random_length_prob=0.01)
    stable_end = round(1.2e12 / TOKENS_PER_STEP)  # 228,882
    decay_start = round(2.0e12 / TOKENS_PER_STEP)  # 381,470
    total = round(2.3e12 / TOKENS_PER_STEP)  # 438,691
    c.optim.update(lr=4e-4, b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.1, schedule="wsd",
                   warmup_steps=2000, drop_step=stable_end, drop_ratio=0.25,
                   decay_steps=total - decay_start, final_lr_ratio=1e-5 / 4e-4, clip_norm=1.0)
    c.train.update(steps=total, log_every=100, eval_every=5000, eval_batches=20,
                   peak_flops=989e12)  # H100 SXM dense bf16
    c.checkpoint.update(every=1000, keep=3)
    return lock(c)
