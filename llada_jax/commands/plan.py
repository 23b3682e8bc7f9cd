"""Capacity planning on this CPU for N devices (`llada_jax.plan.plan`):

    llada-plan --config=configs/llada_8b.py --devices=256 [--config.mesh.fsdp=...]
    python -m llada_jax.plan ...   (the same command)

Prints the per-device memory and FLOPs, then the same figures as one JSON line."""

from __future__ import annotations

import json
import os
import sys

from llada_jax.commands import flags as flag_lib
from llada_jax.commands import startup


def define(fv):
    from absl import flags

    flags.DEFINE_integer("devices", None, "number of (virtual) devices to plan for", flag_values=fv)
    flags.DEFINE_bool("cpu_licm", False, "keep XLA:CPU's loop-invariant code motion (f32 copies of bf16 "
                      "weight stacks that an accelerator build does not make)", flag_values=fv)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    devices = next((a.split("=", 1)[1] for a in argv if a.startswith("--devices=")), None)
    asks = any(a in flag_lib.HELP or a in ("--list_config_fields", "--print_config") for a in argv)
    if not asks and (devices is None or not devices.isdigit() or int(devices) < 1):
        raise SystemExit(f"error: --devices={devices}: expected a positive integer "
                         f"(usage: python -m llada_jax.plan --config=CONFIG --devices=N [--config.x=...])")
    # Virtual CPU devices must be set before jax is imported.
    xla_flags = f" --xla_force_host_platform_device_count={devices or 1}"
    if "--cpu_licm" not in argv:
        # XLA:CPU has no native bf16 matmul: it converts the operands to f32, and its
        # loop-invariant code motion then hoists the conversion of a whole scanned weight stack
        # out of the layer loop: an f32 copy of every bf16 weight that accelerator compilers
        # (native bf16 matmuls) never make. For a frozen bf16 base (LoRA) that is 0.93 GB per
        # 8B layer of phantom temporaries; --cpu_licm keeps the CPU compiler's own program.
        xla_flags += " --xla_disable_hlo_passes=while-loop-invariant-code-motion"
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + xla_flags).strip()
    os.environ["JAX_PLATFORMS"] = "cpu"
    with flag_lib.user_errors():
        fv = flag_lib.parse(argv, define, doc=__doc__, config=True)
        startup.start()
        from llada_jax.plan import plan, report

        p = plan(fv.config)
    print(report(p))
    print(json.dumps(p))


if __name__ == "__main__":
    main()
