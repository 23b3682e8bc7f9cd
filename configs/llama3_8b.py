"""Llama-3.1-8B (meta-llama/Llama-3.1-8B) as the start of an AR-to-diffusion adaptation
(configs/a2d.py's recipe): masked-diffusion SFT of the imported checkpoint at 2048 tokens.

The shape is the AR checkpoint's, as its config.json has it, for continued diffusion training:
32 layers of d_model 4096, 32 query and 8 key/value heads (head_dim 128), no biases, SwiGLU
14336 wide, RoPE theta 500000 with Llama 3.1's rescaling (rope_type "llama3": factor 8,
low_freq_factor 1, high_freq_factor 4, original_max_position_embeddings 8192), RMSNorm eps
1e-5, untied head over 128256 rows: 8.03B parameters (8,030,261,248). As a2d.py does with an
AR checkpoint: bidirectional attention (`causal=False`), the checkpoint's shifted logits (the
output at i predicts token i + 1); the mask id is the last row (128255, a reserved special
token), EOS and pad <|end_of_text|> (128001), what import_hf takes from config.json.
`python -m llada_jax.import_hf --src=DIR --workdir=W` then `--config.train.init_from=W`.

    python -m llada_jax.plan --config=configs/llama3_8b.py --devices=8                  # fsdp 8: 20.3 GiB
    python -m llada_jax.plan --config=configs/llama3_8b.py --devices=1 --config.lora.rank=16 \\
        --config.mesh.fsdp=1 --config.data.batch_size=1                                # 18.3 GiB
"""

import os

from llada_jax.config import load_config_file


def get_config():
    # dream_7b.py's run (SFT at 2048 tokens, mesh, optimizer, LoRA base dtype), loaded by path so
    # that this file works from any directory; only the model's shape and special ids differ.
    c = load_config_file(os.path.join(os.path.dirname(__file__), "dream_7b.py"))
    c.model.update(family="llama", d_model=4096, n_heads=32, n_kv_heads=8, n_layers=32, mlp_hidden_size=14336,
                   vocab_size=128256, embedding_size=128256, max_sequence_length=131072,
                   rope_theta=500000.0, rms_norm_eps=1e-5, causal=False, logit_alignment="shifted",
                   mask_token_id=128255, eos_token_id=128001, pad_token_id=128001, qkv_bias=False)
    c.model.rope_scaling.update(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                original_max_position_embeddings=8192)
    return c
