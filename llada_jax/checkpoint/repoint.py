"""Repoint a LoRA run at its moved base:
`python -m llada_jax.checkpoint.repoint --workdir=LORA_DIR --base=NEW_DIR [--step=N]`.

A LoRA run keeps its base by reference (run.json `lora_base`, see llada_jax.checkpoint.load).
After moving (or copying) the base workdir, this points the run at the new place: NEW_DIR
must hold the step (default: the one recorded) with the arrays of the run's model shape
(checked from the checkpoint's metadata, nothing restored). run.json gets the new
reference and, in `changes`, the old one; the step is pinned in NEW_DIR.
"""

from __future__ import annotations

import json
import os

from llada_jax.checkpoint import load, manager, workdir as workdir_lib
from llada_jax.model import LLaDAConfig
from llada_jax.model.adapters import lora


def repoint(workdir: str, base: str, step: int | None = None) -> dict:
    """Point the LoRA run in `workdir` at base workdir `base`; returns the new reference."""
    info = workdir_lib.read_run_info(workdir)
    old = info.get("lora_base")
    if not old:
        raise ValueError(f"--workdir={workdir!r} is not a LoRA run (its run.json has no lora_base)")
    load.check_not_lora(base, "--base")
    workdir_lib.read_run_info(base)  # a workdir (WorkdirError otherwise)
    step = int(old["step"] if step is None else step)
    ckpt = manager.Checkpointer(manager.checkpoint_dir(base), read_only=True, async_save=False)
    try:
        if step not in ckpt.all_steps():
            raise ValueError(f"--base={base!r} holds steps {ckpt.all_steps()}, not step {step} of the LoRA base")
        _, abstract_base = lora.split(load.placed_params(LLaDAConfig(**info["model"])))
        ckpt._check_metadata(step, {"params": abstract_base}, dtypes=False)  # CheckpointMismatchError
    finally:
        ckpt.close()
    new = {"workdir": os.path.abspath(base), "step": step}
    with workdir_lib.lock(workdir, "repoint"):
        info = workdir_lib.read_run_info(workdir)
        changes = info.pop("changes", []) + [{"step": None, "field": "lora_base", "old": old, "new": new}]
        kind = info.pop("kind")
        workdir_lib.write_run_info(workdir, kind, **dict(info, lora_base=new, changes=changes))
    workdir_lib.pin(base, step, workdir)
    return new


def define_flags(fv):
    """The flags of `python -m llada_jax.checkpoint.repoint`, on absl FlagValues `fv`."""
    from absl import flags

    flags.DEFINE_string("workdir", None, "the LoRA run's workdir, required", flag_values=fv)
    flags.DEFINE_string("base", None, "the base workdir's new place, required", flag_values=fv)
    flags.DEFINE_integer("step", None, "base step (default: the one run.json records)", flag_values=fv)


def main(argv=None):
    """`python -m llada_jax.checkpoint.repoint`, `argv` without the program name (default sys.argv[1:])."""
    from llada_jax import cli

    args = cli.parse(define_flags, argv, __doc__.split("\n\n")[0], required=("workdir", "base"))

    with cli.user_errors():
        new = repoint(args.workdir, args.base, args.step)
    print(json.dumps({"workdir": os.path.abspath(args.workdir), "lora_base": new}))


if __name__ == "__main__":
    main()
