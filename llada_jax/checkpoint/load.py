"""Reading a workdir: the one loader of a run's (or an import's) model shape, parameters
and tokenizer. Sampling (`llada_jax.generate`), export, evaluation, the public API
(`llada_jax.load_workdir`) and the training loop (`train.init_from`, a LoRA run's base)
all read through `load_workdir` / `restore_workdir_params`.

A LoRA run (`--config.lora.rank=16 --config.train.init_from=BASE`) keeps the base model
once, by reference: its checkpoints hold only the adapters and their optimizer state;
run.json records `lora_base` = {"workdir": absolute path of BASE, "step": the base step
used}. Restoring a LoRA workdir (resume, sampling, evaluation, export) reads the adapters
from its own checkpoint and the base from that exact step of BASE and combines them
(nothing merged), so BASE must stay where it is (an `import_hf` workdir never changes; in a
training workdir the step is pinned, BASE/pins/, and its retention never prunes it). A
moved BASE is repointed with `python -m llada_jax.checkpoint.repoint --workdir=LORA_DIR
--base=NEW_DIR` (the step's arrays are checked against the run's shape). To get a
self-contained copy, export the merged weights (`merge_lora`):
`python -m llada_jax.export --workdir=LORA_DIR --out=DIR` writes W + alpha/rank A B as a
plain Hugging Face directory; with `--peft --base_model=BASE_HF` it writes the adapters alone
in the PEFT format for `peft.PeftModel.from_pretrained(base, DIR)` on that exported base
(`llada_jax.interop.export.save_peft`, `llada_jax.interop.peft_base`).
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from llada_jax.checkpoint import manager, workdir as workdir_lib
from llada_jax.model import LLaDAConfig, abstract_params
from llada_jax.model.adapters import lora
from llada_jax.parallel import sharding


class Workdir(NamedTuple):
    config: LLaDAConfig
    params: Any  # jax.Arrays, placed as load_workdir's `mesh` says
    step: int
    tokenizer: Any  # a llada_jax.data.tokenizer object, or None (synthetic data; or tokenizer=False)
    info: dict  # run.json


def placed_params(config: LLaDAConfig, mesh=None):
    """ShapeDtypeStructs of the parameter tree, sharded over `mesh` by the model's logical
    axes (`config.mesh.rules` aside: the default rules), or on the default device."""
    boxed = abstract_params(config)
    if mesh is None:
        dev = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        shardings = jax.tree_util.tree_map(lambda _: dev, nn.unbox(boxed))
    else:
        shardings = sharding.shardings_of(boxed, mesh)
    return manager.abstract_like(nn.unbox(boxed), shardings)


def base_reference(workdir: str):
    """run.json's `lora_base` of a workdir ({"workdir", "step"}), or None."""
    path = os.path.join(workdir, "run.json")
    return manager.run_info(workdir).get("lora_base") if os.path.isfile(path) else None


def merge_lora(config: LLaDAConfig, params, dtype=None):
    """(config without LoRA, merged params): W + alpha/rank A B in float32 per weight, kept
    in `dtype` (default: the base's). An export merges in its own dtype: a float32 export
    of adapters trained on a bfloat16 base is bf16(W) + A B, not that sum rounded to bf16."""
    if not config.lora.rank:
        return config, params
    merged = jax.jit(lambda p: lora.merge(config.lora, p, None if dtype is None else jnp.dtype(dtype)))(params)
    return config.replace(lora=lora.LoRAConfig()), merged


def check_not_lora(path: str, field: str = "config.train.init_from") -> None:
    """ValueError when workdir `path` is a LoRA run (its checkpoints hold adapters only)."""
    if os.path.isdir(path) and base_reference(path) is not None:
        raise ValueError(f"{field}={path!r} is itself a LoRA run (its checkpoints hold only adapters); export it "
                         "merged (python -m llada_jax.export) and import_hf that, then start from the import")


def load_base(base_workdir: str, abstract_base, step=None, lora_workdir: str = "LORA_DIR"):
    """(step, base params) of a non-LoRA workdir, cast to the abstract dtypes on restore
    (orbax casts while reading, so an fp32 checkpoint becomes a bf16 base without an fp32 copy).
    A base (or step) that is gone is a ValueError naming the repoint command. A Hugging Face
    folder (config.json, no run.json) is read from its safetensors as step 0."""
    from llada_jax.interop import import_hf

    if import_hf.is_hf_dir(base_workdir):
        return 0, import_hf.restore_like(base_workdir, abstract_base)
    check_not_lora(base_workdir)
    if step is not None and step not in _steps(base_workdir):
        raise ValueError(f"the LoRA base {base_workdir!r} no longer holds step {step} (it holds "
                         f"{_steps(base_workdir) or 'no checkpoints'}); if it moved, repoint the LoRA run: "
                         f"python -m llada_jax.checkpoint.repoint --workdir={lora_workdir} --base=NEW_DIR")
    return manager.restore_params(base_workdir, abstract_base, step)


def _steps(workdir: str) -> list[int]:
    if not os.path.isdir(manager.checkpoint_dir(workdir)):
        return []
    ckpt = manager.Checkpointer(manager.checkpoint_dir(workdir), read_only=True, async_save=False)
    try:
        return ckpt.all_steps()
    finally:
        ckpt.close()


def lora_base(workdir: str, init_from: str, abstract_base, resuming: bool, primary: bool = True):
    """(reference {"workdir", "step"}, base params) of the LoRA run in `workdir`: a resumed
    run's recorded base, else the latest step of `init_from`. Process 0 pins that step in
    the base (workdir.pin) so the base's retention keeps it."""
    ref = (base_reference(workdir) if resuming else None) or {"workdir": os.path.abspath(init_from), "step": None}
    ref = dict(ref, step=None if ref["step"] is None else int(ref["step"]))
    ref["step"], base = load_base(ref["workdir"], abstract_base, ref["step"], workdir)
    note = ""
    if primary:
        try:
            pinned = workdir_lib.pin(ref["workdir"], ref["step"], workdir)
            note = f" (pinned: {pinned}; that run's checkpoint retention keeps it)" if pinned else ""
        except OSError as e:  # a read-only base: it cannot prune either, but say so
            note = f" (NOT pinned: {e}; training that base on may prune this step)"
    print(f"LoRA base: step {ref['step']} of {ref['workdir']}{note}", flush=True)
    return ref, base


def restore_workdir_params(path: str, abstract, step=None):
    """(step, params) of a workdir's checkpoint `step` (default: the latest readable), placed
    as the ShapeDtypeStructs `abstract` say. A LoRA run: its adapters plus its base."""
    ref = base_reference(path)
    if ref is None:
        return manager.restore_params(path, abstract, step)
    abstract_adapters, abstract_base = lora.split(abstract)
    step, adapters = manager.restore_params(path, abstract_adapters, step)
    _, base = load_base(ref["workdir"], abstract_base, ref["step"], path)
    return step, lora.combine(adapters, base)


def load_workdir(path: str, mesh=None, *, step: int | None = None, tokenizer: bool = True) -> Workdir:
    """A workdir's model config (run.json), parameters of checkpoint `step` (default: the
    latest readable) and tokenizer. mesh: shard the parameters over it by their logical
    axes; None puts them on the default device. ValueError for a directory that is not a
    workdir or holds no readable checkpoint."""
    info = workdir_lib.read_run_info(path)
    config = LLaDAConfig(**info["model"])
    tok_path = workdir_lib.tokenizer_path(info, path) if tokenizer else None  # checked before the restore
    step, params = restore_workdir_params(path, placed_params(config, mesh), step)
    tok = None
    if tok_path:
        from llada_jax.data.tokenizer import load_tokenizer

        tok = load_tokenizer(tok_path)
    return Workdir(config, params, int(step), tok, info)
