"""benchmarks/device.py's `moe` part: the forward pass and the train step of the other families'
7B shapes, with fewer layers so that one device holds them.

Rows: figure "moe", the LLaDA-MoE-7B-A1B shape (configs/llada_moe_7b.py as family lladamoe with
its q/k norms: 64 experts of 1024, 8 per token, ragged dispatch), and figure "dream",
Dream-v0-7B's (the Qwen2.5-7B shape: d_model 3584, 28 heads, 4 KV heads, SwiGLU 18944,
vocabulary 152064, q/k/v biases, shifted logits) on configs/llada_8b.py's settings (chunked
attention, the MLP over 1024-token chunks). Both in bf16 compute with float32 master weights and
full rematerialisation, the pretraining objective at sequence 2048 and the train_step part's
batch. `n_layers` is reduced from `n_layers_published` so that the float32 params and AdamW's
two moments (`params_adam_gib`: 12 bytes a parameter), the gradients and the activations fit
one 80 GB device with margin. Figures: compile seconds, train-step and forward tokens/s, and MFU
over the bf16 matmul peak measured in this run; the MoE's FLOPs are its active parameters' (a
token's router and 8 experts: `llada_jax.model.flops`).
"""

from __future__ import annotations

import time

import jax

from device_parts.common import TINY, attempt, build_step, config_with, timed
from llada_jax.model import build, flops

SEQ_LEN = 2048
# 4 x 420M (experts, attention) + 644M (embeddings, untied head) = 2.32B of the published 7.36B:
# 26 GiB of float32 params and AdamW moments, 35 GiB with the gradients
# The config leaves family and q/k norms to import_hf's flags; the published model has both.
MOE = ("configs/llada_moe_7b.py", 16, {"model.family": "lladamoe", "model.qk_norm": True, "model.n_layers": 4,
                                       "mesh.fsdp": 1, "mesh.expert": 1})
# 6 x 233M + 1.09B = 2.49B of the published 7.62B: 28 GiB with AdamW's moments, 37 GiB with the gradients
DREAM = ("configs/llada_8b.py", 28, {
    "model.family": "dream", "model.d_model": 3584, "model.n_heads": 28, "model.n_kv_heads": 4,
    "model.n_layers": 6, "model.mlp_hidden_size": 18944, "model.vocab_size": 152064,
    "model.embedding_size": 152064, "model.rope_theta": 1e6, "model.rms_norm_eps": 1e-6,
    "model.qkv_bias": True, "model.logit_alignment": "shifted", "model.mask_token_id": 151666,
    "model.eos_token_id": 151643, "model.pad_token_id": 151643, "mesh.fsdp": 1})
TINY_MOE = {"model.moe.num_experts": 4, "model.moe.num_experts_per_tok": 2, "model.moe.expert_hidden_size": 64}
TINY_DREAM = {"model.family": "dream", "model.n_kv_heads": 2, "model.qkv_bias": True,
              "model.logit_alignment": "shifted"}


def _overrides(ctx, over: dict, tiny: dict) -> dict:
    seq = 64 if ctx.smoke else SEQ_LEN
    out = dict(over, **{"data.kind": "pretrain", "data.source": "prepared", "data.seq_len": seq,
                        "data.batch_size": ctx.train_batch, "data.random_length_prob": 0.0})
    if ctx.smoke:
        out.update(TINY)
        out.update(tiny)
    return out


def _row(ctx, figure, path, published_layers, overrides, peak):
    """Compile and time the train step, then the forward pass (logits of the whole batch)
    with the trained params: one row."""
    config = config_with(path, overrides)
    t = time.perf_counter()
    step, state, batch, mcfg = build_step(config)
    state, m = step(state, batch)
    jax.block_until_ready(m)
    compile_s, n = time.perf_counter() - t, 1 if ctx.smoke else 3
    state, m, step_s = timed(lambda s: step(s, batch), state, n)
    b, seq = config.data.batch_size, config.data.seq_len
    n_params = sum(x.size for x in jax.tree_util.tree_leaves(state["params"]))
    row = dict(figure=figure, config=path, family=mcfg.family, n_layers=mcfg.n_layers,
               n_layers_published=published_layers, d_model=mcfg.d_model, dtype=mcfg.dtype,
               param_dtype=mcfg.param_dtype, seq_len=seq, batch=b, params=int(n_params),
               active_matmul_params=flops.matmul_params(mcfg), params_adam_gib=round(n_params * 12 / 2**30, 2),
               loss=round(float(m["loss"]), 4), train_compile_s=round(compile_s, 2), train_step_s=round(step_s, 4),
               train_tokens_per_s=round(b * seq / step_s, 1),
               train_mfu=round(flops.train_flops_per_token(mcfg, seq) * b * seq / step_s / peak, 4))
    if mcfg.moe.enabled:
        row.update(num_experts=mcfg.moe.num_experts, num_experts_per_tok=mcfg.moe.num_experts_per_tok,
                   dispatch=mcfg.moe.dispatch)
    if ctx.over():
        return dict(row, forward_skipped="budget")
    model, params = build(mcfg), state["params"]
    del state, m
    forward = jax.jit(lambda p, ids: model.apply({"params": p}, ids))
    ids = batch["input_ids"]
    t = time.perf_counter()
    jax.block_until_ready(forward(params, ids))
    fwd_compile_s = time.perf_counter() - t
    fwd_s = timed(lambda s: (s, forward(params, ids)), None, n)[2]
    return dict(row, forward_compile_s=round(fwd_compile_s, 2), forward_s=round(fwd_s, 4),
                forward_tokens_per_s=round(b * seq / fwd_s, 1),
                forward_mfu=round(flops.forward_flops(mcfg, seq, seq) * b / fwd_s / peak, 4))


def moe(ctx):
    """The LLaDA-MoE and Dream rows (module docstring): one past the budget is skipped, one that
    fails is an error row."""
    peak, peak_row = ctx.peak_flops()
    rows = [peak_row] if peak_row else []
    for figure, (path, published, over), tiny in (("moe", MOE, TINY_MOE), ("dream", DREAM, TINY_DREAM)):
        if ctx.over():
            rows.append(dict(figure=figure, config=path, skipped="budget"))
            continue
        overrides = _overrides(ctx, over, tiny)
        rows.append(attempt(lambda: _row(ctx, figure, path, published, overrides, peak), figure=figure, config=path))
    return rows
