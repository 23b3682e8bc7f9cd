"""LLaDA-MoE-7B-A1B (inclusionAI/LLaDA-MoE-7B-A1B-Base and -Instruct) fine-tuning: SFT of the
imported checkpoint at 2048 tokens.

The shape is the published config.json's (model_type "llada"/"lladamoe", `LLaDAMoEModelLM`):
16 layers of d_model 2048, 16 heads (no GQA), q/k RMS norms, RoPE theta 50000, every layer an
MoE of 64 SwiGLU experts 1024 wide, 8 per token (softmax scores, no renormalisation, no shared
expert, no expert bias), vocabulary 157184: 7.36B parameters, 1.41B active per token of
which 1.08B outside the embeddings. `python -m llada_jax.import_hf --src=DIR --workdir=W` then
`--config.train.init_from=W`.

    python -m llada_jax.plan --config=configs/llada_moe_7b.py --devices=8 \\
        --config.model.moe.dispatch=dense                                   # fsdp 4 x expert 2: 25.5 GiB
    python -m llada_jax.plan --config=configs/llada_moe_7b.py --devices=1 --config.lora.rank=16 \\
        --config.mesh.fsdp=1 --config.mesh.expert=1 --config.data.batch_size=1 \\
        --config.model.moe.dispatch=dense                                   # 17.7 GiB

The plan runs the dense dispatch: XLA:CPU compiles the ragged one (the config's, for GPU/TPU) as a
masked dense dot over all experts, whose CPU temporaries are not what an accelerator needs.
"""

from llada_jax.config import base_config, lock


def get_config():
    c = base_config()
    c.model.update(family="lladamoe", qk_norm=True,
                   d_model=2048, n_heads=16, n_kv_heads=16, n_layers=16, mlp_hidden_size=8192,
                   vocab_size=157184, embedding_size=157184, max_sequence_length=8192,
                   rope_theta=50000.0, rms_norm_eps=1e-5,
                   mask_token_id=156895, eos_token_id=156892, pad_token_id=156892,
                   dtype="bfloat16", param_dtype="float32", remat_policy="full", attention="chunked")
    c.model.moe.update(num_experts=64, num_experts_per_tok=8, expert_hidden_size=1024, score_function="softmax",
                       norm_topk_prob=False, dispatch="ragged", load_balance_weight=0.01, z_loss_weight=0.001)
    c.mesh.update(data=1, fsdp=4, expert=2, tensor=1)
    c.data.update(kind="sft", source="jsonl", seq_len=2048, batch_size=8, random_length_prob=0.0)
    c.optim.update(lr=1e-5, weight_decay=0.1, schedule="cosine", warmup_steps=50, clip_norm=1.0)
    c.train.update(steps=3000, log_every=10, eval_every=500, peak_flops=989e12)
    c.lora.update(base_dtype="bfloat16")
    return lock(c)
