"""Training throughput on this machine: one JSON line per figure.

    python benchmarks/train.py [--steps=3] [--batch=4] [--seq=128] [--lora=16]

Figures: the matmul peak measured in this run (f32 2048^2 matmul, best of 5), then for
models with d_model 512 and 1024 (4 layers, vocabulary 8192, float32): compile time of
the real jitted train step, step time, tokens/s and MFU = model FLOPs per second (full
bidirectional attention, `llada_jax.model.flops.train_flops_per_token`) over that peak.
--lora=R: each model also with LoRA rank R on all seven projections (frozen float32 base,
adapters trained), the same figures plus "lora_rank" and the trainable parameter count.
MoE rows ("train_step_moe"): the d_model 512 model with 4 experts, 2 per token, each 768 wide
(the dense MLP's 1536 active), per --moe_dispatch; MFU over the active-parameter FLOPs.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from llada_jax.model.adapters import lora  # noqa: E402
from llada_jax.model import flops  # noqa: E402
from llada_jax.config import base_config  # noqa: E402
from llada_jax.parallel import sharding  # noqa: E402
from llada_jax.training import step as train  # noqa: E402
from llada_jax.model import LLaDAConfig, build, init_params  # noqa: E402


def _config(d_model, seq, **kw):
    return LLaDAConfig(d_model=d_model, n_heads=d_model // 64, n_kv_heads=d_model // 64, n_layers=4,
                       mlp_hidden_size=3 * d_model, vocab_size=8192, embedding_size=8192, max_sequence_length=seq,
                       mask_token_id=8191, eos_token_id=8190, pad_token_id=8190, **kw)


def _time_step(cfg, peak, *, steps, batch, seq, frozen=None):
    """Compiles the real jitted train step of `cfg` (AdamW with the defaults' clipping, at a constant
    lr) on one device and times it: (final state, the timing figures of a JSON line)."""
    optim = base_config().optim
    optim.update(schedule="constant", warmup_steps=0)
    model = build(cfg)
    tx, schedule = train.make_optimizer(optim, 100)
    mesh = sharding.make_mesh(dict(data=1, fsdp=1, tensor=1), jax.devices()[:1])
    _, shardings = train.state_shardings(model, tx, mesh)
    if frozen is not None:
        frozen = jax.device_put(frozen, shardings["frozen"])
    state = train.init_state(model, tx, mesh, 0, shardings, frozen=frozen)
    st = train.Static(model, tx, "pretrain", cfg.mask_token_id, 1e-3, 0.0, 1, schedule)
    step = train.compile_step(st, mesh, shardings, {"input_ids": 2})
    ids = np.random.default_rng(0).integers(0, 8000, (batch, seq), dtype=np.int32)
    b = sharding.global_batch({"input_ids": ids}, mesh, batch)
    t = time.perf_counter()
    state, m = step(state, b)
    jax.block_until_ready(m)
    compile_s = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(steps):
        state, m = step(state, b)
    jax.block_until_ready(m)
    step_s = (time.perf_counter() - t) / steps
    step_flops = flops.train_flops_per_token(cfg, seq) * batch * seq
    return state, {"batch": batch, "seq_len": seq, "compile_s": round(compile_s, 2), "step_s": round(step_s, 3),
                   "tokens_per_s": round(batch * seq / step_s, 1),
                   "model_tflops_per_s": round(step_flops / step_s / 1e12, 4), "mfu": round(step_flops / step_s / peak, 4)}


def bench(d_model, peak, *, steps, batch, seq, lora_rank=0):
    cfg, frozen = _config(d_model, seq), None
    if lora_rank:
        frozen = init_params(cfg, jax.random.PRNGKey(0))
        cfg = cfg.replace(lora=lora.LoRAConfig(rank=lora_rank))
    state, timing = _time_step(cfg, peak, steps=steps, batch=batch, seq=seq, frozen=frozen)
    n_params = sum(x.size for x in jax.tree_util.tree_leaves(train.full_params(state)))
    trainable = sum(x.size for x in jax.tree_util.tree_leaves(state["params"]))
    return {"figure": "train_step", "d_model": d_model, "n_layers": 4, "params": int(n_params),
            "lora_rank": lora_rank, "trainable_params": int(trainable), **timing}


def bench_moe(d_model, peak, *, steps, batch, seq, num_experts=4, per_tok=2, dispatch="dense"):
    """The dense row's model with an MoE MLP of the same active parameters: num_experts
    experts of width 3 x d_model / per_tok, per_tok per token (plus the small router). MFU
    is over the active-parameter FLOPs (`flops.train_flops_per_token` counts those)."""
    from llada_jax.model.moe import MoEConfig

    m = MoEConfig(num_experts=num_experts, num_experts_per_tok=per_tok, expert_hidden_size=3 * d_model // per_tok,
                  dispatch=dispatch, load_balance_weight=0.01, z_loss_weight=0.001)
    cfg = _config(d_model, seq, moe=m)
    state, timing = _time_step(cfg, peak, steps=steps, batch=batch, seq=seq)
    return {"figure": "train_step_moe", "d_model": d_model, "n_layers": 4,
            "params": int(sum(x.size for x in jax.tree_util.tree_leaves(state["params"]))),
            "active_matmul_params": flops.matmul_params(cfg), "num_experts": num_experts,
            "num_experts_per_tok": per_tok, "expert_hidden_size": m.expert_hidden_size, "dispatch": dispatch,
            **timing}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--lora", type=int, default=0, help="also time LoRA of this rank (0: only full training)")
    ap.add_argument("--moe_dispatch", default="dense", help="MoE rows: comma-separated dispatches (ragged, dense)")
    a = ap.parse_args()
    peak = flops.measure_peak_flops(n=2048)
    print(json.dumps({"figure": "matmul_peak", "device": str(jax.devices()[0]), "dtype": "float32",
                      "flops_per_s": round(peak, 1), "tflops_per_s": round(peak / 1e12, 4)}), flush=True)
    for d in (512, 1024):
        for rank in (0, a.lora) if a.lora else (0,):
            print(json.dumps(bench(d, peak, steps=a.steps, batch=a.batch, seq=a.seq, lora_rank=rank)), flush=True)
    for dispatch in a.moe_dispatch.split(","):  # the d_model 512 row's active parameters, as an MoE
        print(json.dumps(bench_moe(512, peak, steps=a.steps, batch=a.batch, seq=a.seq, dispatch=dispatch)), flush=True)


if __name__ == "__main__":
    main()
