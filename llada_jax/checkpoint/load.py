"""Reading a workdir: the one loader of a run's (or an import's) model shape, parameters
and tokenizer. Sampling (`llada_jax.generate`), export, evaluation, the public API
(`llada_jax.load_workdir`) and the training loop (`train.init_from`, a LoRA run's base)
all read through `load_workdir` / `restore_workdir_params`.

A LoRA run (`--config.lora.rank=16 --config.train.init_from=BASE`) keeps the base model
once, by reference: its checkpoints hold only the adapters and their optimizer state;
run.json records `lora_base` = {"workdir": absolute path of BASE, "step": the base step
used}. Restoring a LoRA workdir (resume, sampling, evaluation, export) reads the adapters
from its own checkpoint and the base from that exact step of BASE and combines them
(nothing merged), so BASE must stay where it is (an `import_hf` workdir never changes; a
training workdir keeps the step while it is among its kept checkpoints). To get a
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


def load_base(base_workdir: str, abstract_base, step=None):
    """(step, base params) of a non-LoRA workdir, cast to the abstract dtypes on restore
    (orbax casts while reading, so an fp32 checkpoint becomes a bf16 base without an fp32 copy)."""
    if base_reference(base_workdir) is not None:
        raise ValueError(f"config.train.init_from={base_workdir!r} is itself a LoRA run; export it merged "
                         "(python -m llada_jax.export) and import_hf that as the base")
    return manager.restore_params(base_workdir, abstract_base, step)


def restore_workdir_params(path: str, abstract, step=None):
    """(step, params) of a workdir's checkpoint `step` (default: the latest readable), placed
    as the ShapeDtypeStructs `abstract` say. A LoRA run: its adapters plus its base."""
    ref = base_reference(path)
    if ref is None:
        return manager.restore_params(path, abstract, step)
    abstract_adapters, abstract_base = lora.split(abstract)
    step, adapters = manager.restore_params(path, abstract_adapters, step)
    _, base = load_base(ref["workdir"], abstract_base, ref["step"])
    return step, lora.combine(adapters, base)


def load_workdir(path: str, mesh=None, *, step: int | None = None, tokenizer: bool = True) -> Workdir:
    """A workdir's model config (run.json), parameters of checkpoint `step` (default: the
    latest readable) and tokenizer. mesh: shard the parameters over it by their logical
    axes; None puts them on the default device. ValueError for a directory that is not a
    workdir or holds no readable checkpoint."""
    info = workdir_lib.read_run_info(path)
    config = LLaDAConfig(**info["model"])
    step, params = restore_workdir_params(path, placed_params(config, mesh), step)
    tok = None
    if tokenizer and info.get("tokenizer"):
        from llada_jax.data.tokenizer import load_tokenizer

        tok = load_tokenizer(info["tokenizer"])
    return Workdir(config, params, int(step), tok, info)
