"""AR-to-diffusion (A2D, Dream's recipe): continue training an autoregressive checkpoint
(Llama, Qwen2, Qwen3) as a masked diffusion LM: bidirectional attention, the masked-diffusion
loss, and the checkpoint's own shifted alignment (the logit at i predicts token i + 1).

    python -m llada_jax.import_hf --src=QWEN_DIR --workdir=runs/qwen-ar     # prints its flags
    python -m llada_jax.train --config=configs/a2d.py --workdir=runs/qwen-a2d \\
        --config.train.init_from=runs/qwen-ar <the printed --config.model.* flags> \\
        --config.model.causal=False --config.data.tokenizer=runs/qwen-ar/tokenizer.json ...

The printed flags carry the family, its knobs and `causal=True`; the last `causal=False`
wins and drops the causal mask. An autoregressive vocabulary has no mask token: import_hf
takes config.json's `mask_token_id`, else the last row (vocab_size - 1, a padding or reserved
id in Qwen and Llama 3); pass `--config.model.mask_token_id=ID` to choose another.
The defaults below are the tiny Qwen2 shape of tests/data/qwen2-tiny.
"""

from llada_jax.config import base_config, lock


def get_config():
    c = base_config()
    c.model.update(family="qwen2", d_model=64, n_heads=4, n_kv_heads=2, n_layers=2, mlp_hidden_size=96,
                   vocab_size=96, embedding_size=96, max_sequence_length=128, rope_theta=1e6, rms_norm_eps=1e-6,
                   mask_token_id=95, eos_token_id=94, pad_token_id=94, weight_tying=True, qkv_bias=True,
                   logit_alignment="shifted", causal=False)
    c.data.update(kind="pretrain", seq_len=128, batch_size=16, random_length_prob=0.01)
    c.optim.update(lr=1e-5, schedule="wsd", warmup_steps=50, decay_steps=200, final_lr_ratio=0.1,
                   weight_decay=0.1, clip_norm=1.0)  # a trained start: a small lr, as Dream's adaptation
    c.train.update(steps=1000, log_every=25, eval_every=250, eval_batches=2)
    c.checkpoint.update(every=250, keep=2)
    return lock(c)
