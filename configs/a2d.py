"""AR-to-diffusion (A2D, Dream's recipe): continue training an autoregressive checkpoint
(Llama, Qwen2, Qwen3) as a masked diffusion LM: bidirectional attention, the masked-diffusion
loss, and the checkpoint's own shifted alignment (the logit at i predicts token i + 1).

    python -m llada_jax.import_hf --src=QWEN_DIR --workdir=runs/qwen-ar
    python -m llada_jax.train --config=configs/a2d.py --workdir=runs/qwen-a2d \\
        --config.train.init_from=runs/qwen-ar --config.data.tokenizer=runs/qwen-ar/tokenizer.json ...

The family, its knobs, the shape and the special ids come from the import
(`llada_jax.training.inherit`); this config sets what the conversion changes: `causal=False`
(no causal mask) and the checkpoint's shifted alignment. An autoregressive vocabulary has no
mask token: import_hf takes config.json's `mask_token_id`, else the last row (vocab_size - 1, a
padding or reserved id in Qwen and Llama 3); pass `--config.model.mask_token_id=ID` to choose another.
"""

from llada_jax.config import base_config, lock


def get_config():
    c = base_config()
    c.model.update(logit_alignment="shifted", causal=False)  # the rest: the base's
    c.data.update(kind="pretrain", seq_len=128, batch_size=16, random_length_prob=0.01)
    c.optim.update(lr=1e-5, schedule="wsd", warmup_steps=50, decay_steps=200, final_lr_ratio=0.1,
                   weight_decay=0.1, clip_norm=1.0)  # a trained start: a small lr, as Dream's adaptation
    c.train.update(steps=1000, log_every=25, eval_every=250, eval_batches=2)
    c.checkpoint.update(every=250, keep=2)
    return lock(c)
