"""Capacity planning without the hardware: compile the real train step ahead of time for
a virtual mesh of N devices on this CPU and report the per-device memory and FLOPs.

    python -m llada_jax.plan --config=configs/llada_8b.py --devices=256 [--config.mesh.fsdp=...]

As MaxText's train_compile: the state and batch are abstract (`jax.ShapeDtypeStruct`
with the shardings of the mesh), `jit(...).lower(...).compile()` partitions the step
for N devices and the compiled executable's memory analysis gives the sizes; nothing
is allocated. The devices are N virtual CPU devices, so the compiler is XLA:CPU: the
temporaries are those of the CPU program (CPU fusion decisions, bf16 arithmetic widened
to f32), an estimate of what an accelerator build would need. One CPU-only artifact is
removed by default (see `--cpu_licm` in `main`).
"""

from __future__ import annotations

import os
import sys

from llada_jax import cli  # no jax import: --devices sets XLA_FLAGS before jax loads

GIB = 1024 ** 3


def _sharded_bytes(abstract, shardings) -> int:
    """Bytes one device holds of a tree, from each leaf's shard shape."""
    import jax
    import numpy as np

    total = 0
    for leaf, s in zip(jax.tree_util.tree_leaves(abstract), jax.tree_util.tree_leaves(shardings)):
        total += int(np.prod(s.shard_shape(leaf.shape))) * leaf.dtype.itemsize
    return total


def plan(config, devices=None) -> dict:
    """Compile the train step of `config` for `devices` (default: all) and return the
    per-device figures (bytes, FLOPs) as a dict."""
    import jax

    from llada_jax.checkpoint import manager
    from llada_jax.model import flops
    from llada_jax.parallel import sharding
    from llada_jax.training import run as run_lib
    from llada_jax.training import step

    run = run_lib.build_run(config, devices=devices)  # the config checked, nothing inherited
    config, mesh, mcfg, abstract, shardings = run.config, run.mesh, run.model_config, run.abstract, run.shardings
    d = config.data
    st, batch_spec = run_lib.train_static(run)
    state = manager.abstract_like(abstract, shardings)
    compiled = step.compile_step(st, mesh, shardings, batch_spec).lower(state, run_lib.abstract_batch(run)).compile()
    mem = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    n = len(run.devices)
    model_flops = flops.train_flops_per_token(mcfg, d.seq_len) * d.batch_size * d.seq_len
    return {
        "devices": n, "mesh": dict(zip(sharding.mesh_axes(config.mesh), run.dims)),
        "params": sum(x.size for x in jax.tree_util.tree_leaves(abstract["params"])),
        "params_bytes": _sharded_bytes(abstract["params"], shardings["params"]),
        "opt_state_bytes": _sharded_bytes(abstract["opt_state"], shardings["opt_state"]),
        # LoRA: params are the adapters; the frozen base is counted here
        "frozen_params": sum(x.size for x in jax.tree_util.tree_leaves(abstract.get("frozen", {}))),
        "frozen_bytes": _sharded_bytes(abstract.get("frozen", {}), shardings.get("frozen", {})),
        "argument_bytes": int(mem.argument_size_in_bytes), "output_bytes": int(mem.output_size_in_bytes),
        "alias_bytes": int(mem.alias_size_in_bytes), "temp_bytes": int(mem.temp_size_in_bytes),
        "code_bytes": int(mem.generated_code_size_in_bytes),
        # arguments (state donated into the outputs) + temporaries
        "total_bytes": int(mem.argument_size_in_bytes + mem.output_size_in_bytes - mem.alias_size_in_bytes
                           + mem.temp_size_in_bytes),
        "compiled_flops_per_device": float(cost.get("flops", -1.0)) if cost else -1.0,
        "model_flops_per_step": model_flops, "model_flops_per_device": model_flops / n,
    }


def report(p: dict) -> str:
    def g(b):
        return f"{b / GIB:8.2f} GiB" if b >= GIB / 10 else f"{b / 2**20:8.2f} MiB"

    lines = [
        f"devices: {p['devices']}  mesh: {p['mesh']}  parameters: {p['params']:,}",
        "per device:",
        f"  params           {g(p['params_bytes'])}" + (f"  (LoRA adapters; frozen base {g(p['frozen_bytes'])}, "
                                                          f"{p['frozen_params']:,} parameters)"
                                                          if p["frozen_params"] else ""),
        f"  optimizer state  {g(p['opt_state_bytes'])}",
        f"  temporaries      {g(p['temp_bytes'])}",
        f"  arguments        {g(p['argument_bytes'])}  (outputs {g(p['output_bytes'])}, aliased {g(p['alias_bytes'])})",
        f"  total            {g(p['total_bytes'])}",
        f"FLOPs per step: model {p['model_flops_per_step']:.4g} ({p['model_flops_per_device']:.4g} per device); "
        f"compiled per device {p['compiled_flops_per_device']:.4g}",
    ]
    return "\n".join(lines)


def main(argv=None):
    argv = list(sys.argv if argv is None else argv)
    devices = next((a.split("=", 1)[1] for a in argv if a.startswith("--devices=")), None)
    if devices is None and cli.HELP.intersection(argv):
        devices = "1"  # --help: the flags are listed, nothing is planned
    if devices is None or not devices.isdigit() or int(devices) < 1:
        raise SystemExit(f"error: --devices={devices}: expected a positive integer "
                         f"(usage: python -m llada_jax.plan --config=CONFIG --devices=N [--config.x=...])")
    devices = int(devices)
    # Virtual CPU devices must be set before jax is imported.
    xla_flags = f" --xla_force_host_platform_device_count={devices}"
    if "--cpu_licm" not in argv:
        # XLA:CPU has no native bf16 matmul: it converts the operands to f32, and its
        # loop-invariant code motion then hoists the conversion of a whole scanned weight stack
        # out of the layer loop: an f32 copy of every bf16 weight that accelerator compilers
        # (native bf16 matmuls) never make. For a frozen bf16 base (LoRA) that is 0.93 GB per
        # 8B layer of phantom temporaries; --cpu_licm keeps the CPU compiler's own program.
        xla_flags += " --xla_disable_hlo_passes=while-loop-invariant-code-motion"
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + xla_flags).strip()
    os.environ["JAX_PLATFORMS"] = "cpu"
    from absl import flags

    with cli.user_errors():
        argv = cli.define_config_flag(argv)
    flags.DEFINE_integer("devices", None, "number of (virtual) devices to plan for")
    flags.DEFINE_bool("cpu_licm", False, "keep XLA:CPU's loop-invariant code motion (f32 copies of bf16 "
                      "weight stacks that an accelerator build does not make)")

    def run(_):
        import json

        p = plan(flags.FLAGS.config)
        print(report(p))
        print(json.dumps(p))

    cli.run_absl(run, argv)


if __name__ == "__main__":
    main()
