"""What the parts of benchmarks/device.py share: the run context, config overrides, the run's
own train step on one device, the LLaDA-8B shape with random weights, and a timed loop."""

from __future__ import annotations

import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from llada_jax.config import load_config_file
from llada_jax.model import build, flops, from_config, init_params
from llada_jax.parallel import sharding
from llada_jax.training import run as run_lib
from llada_jax.training import step, train_state

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = {"model.d_model": 64, "model.n_heads": 4, "model.n_kv_heads": 4, "model.n_layers": 2,
        "model.mlp_hidden_size": 128, "model.vocab_size": 256, "model.embedding_size": 256,
        "model.max_sequence_length": 64, "model.mask_token_id": 255, "model.eos_token_id": 254,
        "model.pad_token_id": 254, "model.mlp_chunk": 0}


class Ctx:
    """The run: device, mode, the per-part deadline, the matmul peak, and the plan subprocess."""

    def __init__(self, smoke: bool, train_batch: int):
        self.smoke, self.train_batch = smoke, train_batch
        self.backend = jax.default_backend()
        self.device = jax.devices()[0].device_kind
        self.deadline = math.inf
        self.plan_proc = None
        self.peak = None  # FLOP/s of the bf16 matmul (smoke: f32), measured once (`peak_flops`)

    def over(self) -> bool:
        return time.perf_counter() > self.deadline

    def impls(self, *, training: bool = False):
        """The attention implementations this backend runs natively (dense first: the reference)."""
        extra = {"gpu": ["cudnn"], "tpu": ["splash"]}.get(self.backend, [])
        if self.smoke:  # one compile per row kept: the test's CPU time
            return ["chunked"] if training else ["dense", "chunked"]
        return ["dense", "chunked"] + extra

    def peak_flops(self):
        """(FLOP/s, its matmul_peak row or None when measured before): the MFU denominator."""
        if self.peak is not None:
            return self.peak, None
        n, dtype = (256, jnp.float32) if self.smoke else (8192, jnp.bfloat16)
        self.peak = flops.measure_peak_flops(n=n, dtype=dtype)
        return self.peak, dict(figure="matmul_peak", dtype=jnp.dtype(dtype).name, n=n,
                               tflops_per_s=round(self.peak / 1e12, 3))


def config_with(path: str, overrides: dict):
    """The config file `path` (under the repository) with dotted `overrides` ("model.moe.num_experts")."""
    c = load_config_file(os.path.join(ROOT, path))
    with c.unlocked():
        for key, value in overrides.items():
            *sections, name = key.split(".")
            node = c
            for s in sections:
                node = node[s]
            node[name] = value
    return c


def build_step(config):
    """(step, state, batch, model config): the run's own train step for `config` on one device,
    a random base for LoRA (the training loop's init_from base, random instead of restored)."""
    run = run_lib.build_run(config, devices=jax.devices()[:1])
    mesh, mcfg, model, abstract, shardings = run.mesh, run.model_config, run.model, run.abstract, run.shardings
    st, batch_spec = run_lib.train_static(run)
    frozen = None
    if "frozen" in abstract:
        from flax import linen as nn
        from llada_jax.model.adapters import lora

        def base(key):
            return lora.split(nn.unbox(model.init(key, jnp.zeros((1, 8), jnp.int32))["params"]))[1]
        with jax.set_mesh(mesh), sharding.logical_rules_context(st.rules):
            frozen = jax.jit(base, out_shardings=shardings["frozen"])(jax.random.key(1))
    state = train_state.init_state(model, run.tx, mesh, 0, shardings,
                             frozen=frozen, rules=st.rules)
    d = config.data
    rng = np.random.default_rng(0)
    local = {"input_ids": rng.integers(0, mcfg.vocab_size - 2, (d.batch_size, d.seq_len), dtype=np.int32)}
    if "prompt_mask" in batch_spec:
        local["prompt_mask"] = np.arange(d.seq_len)[None, :].repeat(d.batch_size, 0) < d.seq_len // 8
    step_fn = step.compile_step(st, mesh, shardings, batch_spec)
    return step_fn, state, sharding.global_batch(local, mesh, d.batch_size), mcfg


def random_8b(ctx, **model_over):
    """(model, params): the LLaDA-8B shape (tiny under --smoke) with random bf16 weights (one
    compiled init for the bidirectional and the block-causal model: `init_params`)."""
    over = dict(TINY, **{"model.max_sequence_length": 64}) if ctx.smoke else {}
    over.update({"model.param_dtype": "bfloat16", "model.dtype": "bfloat16"}, **model_over)
    model = build(from_config.model_config(config_with("configs/llada_8b.py", over), None))
    return model, init_params(model.config, jax.random.key(2))


def attempt(row_fn, **fields) -> dict:
    """`row_fn()`, or an "error" row with `fields` when it raises: the part's other rows still run
    (an out-of-memory model, a kernel the device lacks)."""
    try:
        return row_fn()
    except Exception as e:  # noqa: BLE001 - a failing row is a figure
        return dict(fields, error=f"{type(e).__name__}: {e}"[:2000])


def timed(fn, state, n: int):
    """(state, last output, seconds per call) of `n` calls of `fn(state) -> (state, out)` after
    the calls made before (compiles excluded), synchronised on the last output."""
    t = time.perf_counter()
    out = None
    for _ in range(n):
        state, out = fn(state)
    jax.block_until_ready(out)
    return state, out, (time.perf_counter() - t) / n
