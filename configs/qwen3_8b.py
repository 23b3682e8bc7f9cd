"""Qwen3-8B (Qwen/Qwen3-8B; Qwen3-8B-Base has the same shape) as the start of an
AR-to-diffusion adaptation (configs/a2d.py's recipe): masked-diffusion SFT of the imported
checkpoint at 2048 tokens.

The shape is the AR checkpoint's, as its config.json has it, for continued diffusion training:
36 layers of d_model 4096, 32 query and 8 key/value heads of head_dim 128
(`attention_head_dim`; config.json states it, here equal to d_model / heads), RMSNorm on
queries and keys (`qk_norm`), no biases, SwiGLU 12288 wide, RoPE theta 1e6, RMSNorm eps 1e-6,
untied head over 151936 rows: 8.19B parameters (8,190,735,360). As a2d.py does with an AR
checkpoint: bidirectional attention (`causal=False`), the checkpoint's shifted logits (the
output at i predicts token i + 1); the mask id is the last row (151935, a padding row of the
embedding), EOS and pad <|im_end|> (151645; Qwen3-8B-Base: 151643), what import_hf takes
from config.json. `python -m llada_jax.import_hf --src=DIR --workdir=W` then
`--config.train.init_from=W`.

    python -m llada_jax.plan --config=configs/qwen3_8b.py --devices=8                   # fsdp 8: 21.6 GiB
    python -m llada_jax.plan --config=configs/qwen3_8b.py --devices=1 --config.lora.rank=16 \\
        --config.mesh.fsdp=1 --config.data.batch_size=1                                # 19.1 GiB
"""

import os

from llada_jax.config import load_config_file


def get_config():
    # dream_7b.py's run (SFT at 2048 tokens, mesh, optimizer, LoRA base dtype), loaded by path so
    # that this file works from any directory; only the model's shape and special ids differ.
    c = load_config_file(os.path.join(os.path.dirname(__file__), "dream_7b.py"))
    c.model.update(family="qwen3", d_model=4096, n_heads=32, n_kv_heads=8, n_layers=36, mlp_hidden_size=12288,
                   vocab_size=151936, embedding_size=151936, max_sequence_length=40960, attention_head_dim=128,
                   rope_theta=1e6, rms_norm_eps=1e-6, qk_norm=True, causal=False, logit_alignment="shifted",
                   mask_token_id=151935, eos_token_id=151645, pad_token_id=151645, qkv_bias=False)
    return c
