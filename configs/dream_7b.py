"""Dream-v0-7B (Dream-org/Dream-v0-Base-7B and -Instruct-7B) fine-tuning: SFT of the imported
checkpoint at 2048 tokens.

The shape is Qwen2.5-7B's, as Dream's published config.json has it (model_type "Dream"): 28
layers of d_model 3584, 28 query and 4 key/value heads (head_dim 128) with q/k/v biases,
SwiGLU 18944 wide, RoPE theta 1e6, RMSNorm eps 1e-6, untied head over 152064 rows, mask id
151666, pad/EOS 151643; bidirectional attention and shifted logits (the output at i predicts
token i + 1): 7.62B parameters. `python -m llada_jax.import_hf --src=DIR --workdir=W` then
`--config.train.init_from=W`. Qwen2.5-7B (family qwen2) has this shape: its A2D start plans the same.

    python -m llada_jax.plan --config=configs/dream_7b.py --devices=8                   # fsdp 8: 19.7 GiB
    python -m llada_jax.plan --config=configs/dream_7b.py --devices=1 --config.lora.rank=16 \\
        --config.mesh.fsdp=1 --config.data.batch_size=1                                # 17.5 GiB
"""

from llada_jax.config import base_config, lock


def get_config():
    c = base_config()
    c.model.update(family="dream", d_model=3584, n_heads=28, n_kv_heads=4, n_layers=28, mlp_hidden_size=18944,
                   vocab_size=152064, embedding_size=152064, max_sequence_length=131072,
                   rope_theta=1e6, rms_norm_eps=1e-6, qkv_bias=True, causal=False, logit_alignment="shifted",
                   mask_token_id=151666, eos_token_id=151643, pad_token_id=151643,
                   dtype="bfloat16", param_dtype="float32", remat_policy="full", attention="chunked",
                   mlp_chunk=1024)
    c.mesh.update(data=1, fsdp=8, tensor=1)
    c.data.update(kind="sft", source="jsonl", seq_len=2048, batch_size=8, random_length_prob=0.0)
    c.optim.update(lr=1e-5, weight_decay=0.1, schedule="cosine", warmup_steps=50, clip_norm=1.0)
    c.train.update(steps=3000, log_every=10, eval_every=500, peak_flops=989e12)
    c.lora.update(base_dtype="bfloat16")
    return lock(c)
