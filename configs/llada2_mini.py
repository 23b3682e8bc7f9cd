"""LLaDA2.0-mini (inclusionAI/LLaDA2.0-mini; LLaDA2.1-mini has the same shape) fine-tuning:
block-diffusion SFT (`data.kind="block_sft"`, LLaDA 2.x's) of the imported checkpoint at 2048 tokens.

The shape is the published config.json's (model_type "llada2_moe", `LLaDA2MoeModelLM`, family
`llada2`): 20 layers of d_model 2048, 16 query and 4 key/value heads of 128, q/k RMS norms, RoPE
on half of each head (partial_rotary_factor 0.5, theta 600000), a dense first layer (SwiGLU
5120), then MoE layers of 256 SwiGLU experts 512 wide, 8 per token (sigmoid scores, expert bias
choosing within the best 4 of 8 groups, renormalised, times 2.5) plus one shared expert,
vocabulary 157184, block-causal blocks of 32 (the published `generate`'s block_length).
`python -m llada_jax.import_hf --src=DIR --workdir=W` then `--config.train.init_from=W`.

    python -m llada_jax.plan --config=configs/llada2_mini.py --devices=8 \\
        --config.model.moe.dispatch=dense                                   # expert 8: 55.3 GiB
    python -m llada_jax.plan --config=configs/llada2_mini.py --devices=1 --config.lora.rank=16 \\
        --config.mesh.fsdp=1 --config.mesh.expert=1 --config.data.batch_size=1 \\
        --config.model.moe.dispatch=dense                                   # 41.1 GiB

16.26B parameters. On 8 devices expert 8 (32 experts each, the rest replicated) needs the least:
fsdp 2 x expert 4 57.5 GiB, fsdp 4 x expert 2 72.1 GiB (the dense dispatch's temporaries grow
with the experts a device holds).

The plan runs the dense dispatch: XLA:CPU compiles the ragged one (the config's, for GPU/TPU) as a
masked dense dot over all experts, whose CPU temporaries are not what an accelerator needs.
"""

from llada_jax.config import base_config, lock


def get_config():
    c = base_config()
    c.model.update(family="llada2", qk_norm=True, partial_rotary_factor=0.5, block_size=32,
                   d_model=2048, n_heads=16, n_kv_heads=4, n_layers=20, mlp_hidden_size=5120,
                   vocab_size=157184, embedding_size=157184, max_sequence_length=32768,
                   rope_theta=600000.0, rms_norm_eps=1e-6,
                   mask_token_id=156895, eos_token_id=156892, pad_token_id=156892,
                   dtype="bfloat16", param_dtype="float32", remat_policy="full", attention="chunked")
    c.model.moe.update(num_experts=256, num_experts_per_tok=8, expert_hidden_size=512, shared_hidden_size=512,
                       score_function="sigmoid", expert_bias="selection", n_group=8, topk_group=4,
                       norm_topk_prob=True, routed_scaling_factor=2.5, first_k_dense=1, dispatch="ragged",
                       load_balance_weight=0.01, z_loss_weight=0.001)
    c.mesh.update(data=1, fsdp=1, expert=8, tensor=1)
    c.data.update(kind="block_sft", source="jsonl", seq_len=2048, batch_size=8, random_length_prob=0.0)
    c.optim.update(lr=1e-5, weight_decay=0.1, schedule="cosine", warmup_steps=50, clip_norm=1.0)
    c.train.update(steps=3000, log_every=10, eval_every=500, peak_flops=989e12)
    c.lora.update(base_dtype="bfloat16")
    return lock(c)
