"""Where the train step's time goes, ours against PyTorch eager, on this machine: one JSON
line per part and width (the model of benchmarks/train.py: 4 layers, vocabulary 8192,
batch 4 x 128, float32).

    python benchmarks/train_profile.py [--d_model 512,1024] [--repeats 5]

Parts, each timed alone (median of --repeats, after a warm-up):
- jax: `step` (the real jitted train step), `forward` (the loss, jitted), `forward_backward`
  (its value_and_grad), `optimizer` (the step's clip + AdamW update on gradients of the
  parameters' shape), `finite_check` (the step's finite check of the update: `train_state.update_finite`)
  and `matmuls` (every matmul of the forward and backward, `benchmarks/matmul.py`'s shapes,
  each a jitted `jnp.dot`, summed: the time the step cannot go below with these kernels);
- torch (eager, --threads threads): `step`, `forward`, `forward_backward`, `optimizer`
  (clip + AdamW.step) and `matmuls` (`torch.mm` of the same shapes).
Each line has `fraction_of_step` (the part's time over its framework's step).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import matmul  # noqa: E402
from llada_jax import host_memory  # noqa: E402
import train as train_bench  # noqa: E402


def _median(fn, repeats):
    return matmul._median_time(fn, repeats, inner=1)  # one call a repeat: a whole step or part


def jax_parts(d, batch, seq, repeats):
    import jax
    import jax.numpy as jnp

    from llada_jax.objectives import get as objective
    from llada_jax.training import optimizer, step, train_state

    cfg = train_bench._config(d, seq)
    state, step_fn, b, _, st = train_bench._compile_step(cfg, batch=batch, seq=seq)
    box = {"state": state}

    def full():
        box["state"], m = step_fn(box["state"], b)
        jax.block_until_ready(m)

    parts = {"step": _median(full, repeats)}
    params = box["state"]["params"]
    ids = {"input_ids": jnp.asarray(np.asarray(b["input_ids"]))}
    noise = objective("pretrain").noise(ids, jax.random.key(1), None, mask_id=st.mask_id, eps=st.eps)
    fwd = jax.jit(lambda p: step.loss_fn(p, ids, noise, None, st)[0])
    grad = jax.jit(jax.value_and_grad(lambda p: step.loss_fn(p, ids, noise, None, st)[0]))
    parts["forward"] = _median(lambda: fwd(params).block_until_ready(), repeats)
    parts["forward_backward"] = _median(lambda: jax.block_until_ready(grad(params)), repeats)
    grads = grad(params)[1]
    opt = jax.jit(lambda p, o, g: optimizer.apply_gradients(st.tx, p, o, g))
    opt_state = box["state"]["opt_state"]
    parts["optimizer"] = _median(lambda: jax.block_until_ready(opt(params, opt_state, grads)), repeats)
    finite = jax.jit(train_state.update_finite)
    parts["finite_check"] = _median(lambda: finite(params, jnp.float32(1)).block_until_ready(), repeats)
    total = 0.0
    for (m, k, n), count in matmul.shapes(d, batch * seq).items():
        a, w = jnp.ones((m, k), jnp.float32), jnp.ones((k, n), jnp.float32)
        dot = jax.jit(jnp.dot)
        total += count * _median(lambda: dot(a, w).block_until_ready(), repeats)
    parts["matmuls"] = total
    return parts


def torch_parts(d, batch, seq, repeats, threads):
    import torch
    import torch.nn.functional as F

    from llada_jax.interop import torch_model

    torch.set_num_threads(threads)
    cfg = train_bench._config(d, seq)
    one = train_bench.torch_step(cfg, batch=batch, seq=seq, compiled=False)
    parts = {"step": _median(one, repeats)}
    model = torch_model.LLaDATorch(torch_model.Args(
        d_model=cfg.d_model, n_heads=cfg.n_heads, n_kv_heads=cfg.n_kv_heads, n_layers=cfg.n_layers,
        mlp_hidden_size=cfg.mlp_hidden_size, embedding_size=cfg.embedding_size, rope_theta=cfg.rope_theta)).train()
    ids = torch.from_numpy(np.random.default_rng(0).integers(0, 8000, (batch, seq))).long()
    masked = torch.rand(batch, seq) < 0.5

    def loss():
        logits = model(torch.where(masked, cfg.mask_token_id, ids))
        ce = F.cross_entropy(logits.view(-1, logits.shape[-1]), ids.view(-1), reduction="none").view(batch, seq)
        return torch.where(masked, ce / 0.5, 0.0).sum() / ids.numel()

    with torch.no_grad():
        parts["forward"] = _median(loss, repeats)

    def fwd_bwd():
        model.zero_grad(set_to_none=True)
        loss().backward()
    parts["forward_backward"] = _median(fwd_bwd, repeats)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def opt_step():
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    parts["optimizer"] = _median(opt_step, repeats)
    total = 0.0
    for (m, k, n), count in matmul.shapes(d, batch * seq).items():
        a, w = torch.ones(m, k), torch.ones(k, n)
        total += count * _median(lambda: torch.mm(a, w), repeats)
    parts["matmuls"] = total
    return parts


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--d_model", default="512,1024")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    host_memory.configure()  # as the commands do ($LLADA_JAX_HOST_MEMORY)
    for d in (int(x) for x in a.d_model.split(",")):
        for impl, parts in (("jax", jax_parts(d, a.batch, a.seq, a.repeats)),
                            ("torch_eager", torch_parts(d, a.batch, a.seq, a.repeats, a.threads))):
            for part, s in parts.items():
                print(json.dumps(dict(figure="train_step_part", impl=impl, part=part, d_model=d, seconds=round(s, 4),
                                      fraction_of_step=round(s / parts["step"], 3),
                                      xla_flags=os.environ.get("XLA_FLAGS", ""),
                                      load_avg_1m=round(os.getloadavg()[0], 2))), flush=True)


if __name__ == "__main__":
    main()
