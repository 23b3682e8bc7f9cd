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
--torch: the same model in plain PyTorch (`llada_jax.interop.torch_model`, the published
modeling file's architecture) with the same masked-diffusion loss, `torch.optim.AdamW`
(decay on matrices only) and gradient clipping, eager with 2 threads and under
`torch.compile`; the three steps are timed in turn, repeat after repeat, and each line
holds the median step time and the median of the per-repeat ratios to ours.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from llada_jax import host_memory  # noqa: E402
from llada_jax.model.adapters import lora  # noqa: E402
from llada_jax.model import flops  # noqa: E402
from llada_jax.config import base_config  # noqa: E402
from llada_jax.parallel import sharding  # noqa: E402
from llada_jax.training import optimizer, step, train_state  # noqa: E402
from llada_jax.model import LLaDAConfig, build, init_params  # noqa: E402


def _config(d_model, seq, **kw):
    return LLaDAConfig(d_model=d_model, n_heads=d_model // 64, n_kv_heads=d_model // 64, n_layers=4,
                       mlp_hidden_size=3 * d_model, vocab_size=8192, embedding_size=8192, max_sequence_length=seq,
                       mask_token_id=8191, eos_token_id=8190, pad_token_id=8190, **kw)


def _compile_step(cfg, *, batch, seq, frozen=None):
    """The real jitted train step of `cfg` (AdamW with the defaults' clipping, at a constant lr)
    on one device, run once: (state, step, batch, compile seconds, the step's settings)."""
    optim = base_config().optim
    optim.update(schedule="constant", warmup_steps=0)
    model = build(cfg)
    tx, schedule = optimizer.make_optimizer(optim, 100)
    mesh = sharding.make_mesh(dict(data=1, fsdp=1, tensor=1), jax.devices()[:1])
    _, shardings = train_state.state_shardings(model, tx, mesh)
    if frozen is not None:
        frozen = jax.device_put(frozen, shardings["frozen"])
    state = train_state.init_state(model, tx, mesh, 0, shardings, frozen=frozen)
    st = step.Static(model, tx, "pretrain", cfg.mask_token_id, 1e-3, 0.0, 1, schedule)
    step_fn = step.compile_step(st, mesh, shardings, {"input_ids": 2})
    ids = np.random.default_rng(0).integers(0, 8000, (batch, seq), dtype=np.int32)
    b = sharding.global_batch({"input_ids": ids}, mesh, batch)
    t = time.perf_counter()
    state, m = step_fn(state, b)
    jax.block_until_ready(m)
    return state, step_fn, b, time.perf_counter() - t, st


def _time_step(cfg, peak, *, steps, batch, seq, frozen=None):
    """Compiles and times `_compile_step`: (final state, the timing figures of a JSON line)."""
    state, step_fn, b, compile_s, _ = _compile_step(cfg, batch=batch, seq=seq, frozen=frozen)
    t = time.perf_counter()
    for _ in range(steps):
        state, m = step_fn(state, b)
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
    n_params = sum(x.size for x in jax.tree_util.tree_leaves(train_state.full_params(state)))
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


def torch_step(cfg, *, batch, seq, compiled):
    """One training step of the same model in PyTorch, as a closure: the published
    architecture (our plain-PyTorch module), the masked-diffusion loss (t ~ U[0, 1] per
    row, p = (1 - eps) t + eps, sum over masked tokens of CE / p over B x L), clipping
    at the default norm, AdamW with the default settings (no decay on the norm scales)."""
    import torch
    import torch.nn.functional as F

    from llada_jax.interop import torch_model

    torch.manual_seed(0)
    model = torch_model.LLaDATorch(torch_model.Args(
        d_model=cfg.d_model, n_heads=cfg.n_heads, n_kv_heads=cfg.n_kv_heads, n_layers=cfg.n_layers,
        mlp_hidden_size=cfg.mlp_hidden_size, embedding_size=cfg.embedding_size, rope_theta=cfg.rope_theta))
    model.apply(lambda m: torch_model._init_weights(m, cfg.init_std)).train()
    o = base_config().optim
    decay = [p for n, p in model.named_parameters() if "norm" not in n and "ln_f" not in n]
    no_decay = [p for n, p in model.named_parameters() if "norm" in n or "ln_f" in n]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": o.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-3, betas=(o.b1, o.b2), eps=o.eps)
    ids = torch.from_numpy(np.random.default_rng(0).integers(0, 8000, (batch, seq))).long()

    def loss_fn(noisy, masked, p_mask):
        logits = model(noisy)
        ce = F.cross_entropy(logits.view(-1, logits.shape[-1]), ids.view(-1), reduction="none").view(batch, seq)
        return torch.where(masked, ce / p_mask, 0.0).sum() / ids.numel()

    loss_fn = torch.compile(loss_fn) if compiled else loss_fn

    def step_fn():
        t = torch.rand(batch, 1)
        p_mask = ((1 - 1e-3) * t + 1e-3).expand(batch, seq)
        masked = torch.rand(batch, seq) < p_mask
        noisy = torch.where(masked, cfg.mask_token_id, ids)
        loss = loss_fn(noisy, masked, p_mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), o.clip_norm)
        opt.step()
        return float(loss)

    return step_fn


def versus_torch(d_model, peak, *, steps, batch, seq, repeats):
    """Our step, PyTorch eager and PyTorch compiled, timed in turn `repeats` times
    (`steps` steps each): one line per implementation."""
    import torch

    torch.set_num_threads(2)
    cfg = _config(d_model, seq)
    state, step_fn, b, _, _ = _compile_step(cfg, batch=batch, seq=seq)
    box = {"state": state}

    def ours():
        for _ in range(steps):
            box["state"], m = step_fn(box["state"], b)
        jax.block_until_ready(m)

    runners, errors = {"jax": ours}, {}
    for name, compiled in (("torch_eager", False), ("torch_compile", True)):
        try:
            one = torch_step(cfg, batch=batch, seq=seq, compiled=compiled)
            one()  # warm-up (torch.compile compiles here)
            runners[name] = lambda one=one: [one() for _ in range(steps)]
        except Exception as e:  # torch.compile needs a C++ compiler; say why it is missing
            errors[name] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
    times = {k: [] for k in runners}
    for _ in range(repeats):
        for k, run in runners.items():
            t = time.perf_counter()
            run()
            times[k].append((time.perf_counter() - t) / steps)
    step_flops = flops.train_flops_per_token(cfg, seq) * batch * seq
    for k in list(runners) + list(errors):
        row = {"figure": "train_step_vs_torch", "impl": k, "d_model": d_model, "n_layers": 4, "batch": batch,
               "seq_len": seq, "repeats": repeats, "steps": steps, "torch_threads": torch.get_num_threads()}
        if k in errors:
            row["error"] = errors[k]
        else:
            step_s = float(np.median(times[k]))
            row.update(step_s=round(step_s, 3), mfu=round(step_flops / step_s / peak, 4))
            if k != "jax":  # > 1: ours is faster; the median of the per-repeat ratios
                row["speedup_of_jax"] = round(float(np.median(np.array(times[k]) / np.array(times["jax"]))), 3)
        print(json.dumps(row), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--lora", type=int, default=0, help="also time LoRA of this rank (0: only full training)")
    ap.add_argument("--moe_dispatch", default="dense", help="MoE rows: comma-separated dispatches (ragged, dense)")
    ap.add_argument("--torch", action="store_true", help="also PyTorch eager and torch.compile, in turn with ours")
    ap.add_argument("--repeats", type=int, default=5, help="--torch: rounds of the three in turn")
    a = ap.parse_args()
    policy = host_memory.configure()  # as the commands do ($LLADA_JAX_HOST_MEMORY)
    peak = flops.measure_peak_flops(n=2048)
    print(json.dumps({"figure": "matmul_peak", "device": str(jax.devices()[0]), "dtype": "float32",
                      "flops_per_s": round(peak, 1), "tflops_per_s": round(peak / 1e12, 4),
                      "host_memory": policy}), flush=True)
    for d in (512, 1024):
        for rank in (0, a.lora) if a.lora else (0,):
            print(json.dumps(bench(d, peak, steps=a.steps, batch=a.batch, seq=a.seq, lora_rank=rank)), flush=True)
        if a.torch:
            versus_torch(d, peak, steps=a.steps, batch=a.batch, seq=a.seq, repeats=a.repeats)
    for dispatch in a.moe_dispatch.split(","):  # the d_model 512 row's active parameters, as an MoE
        print(json.dumps(bench_moe(512, peak, steps=a.steps, batch=a.batch, seq=a.seq, dispatch=dispatch)), flush=True)


if __name__ == "__main__":
    main()
