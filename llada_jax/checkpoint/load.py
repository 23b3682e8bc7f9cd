"""Reading a workdir: the one loader of a run's (or an import's) model shape, parameters
and tokenizer. Sampling (`llada_jax.generate`), export, evaluation, the public API
(`llada_jax.load_workdir`) and the training loop (`train.init_from`, a LoRA run's base)
all read through `load_workdir` / `restore_workdir_params`.

A LoRA workdir holds only its adapters; run.json's `lora_base` names the workdir and step
of the frozen base, which is read from there and combined with them (nothing merged).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import flax.linen as nn
import jax

from llada_jax.checkpoint import lora_io, manager, workdir as workdir_lib
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


def load_base(base_workdir: str, abstract_base, step=None):
    """(step, base params) of a non-LoRA workdir, cast to the abstract dtypes on restore
    (orbax casts while reading, so an fp32 checkpoint becomes a bf16 base without an fp32 copy)."""
    if lora_io.base_reference(base_workdir) is not None:
        raise ValueError(f"config.train.init_from={base_workdir!r} is itself a LoRA run; export it merged "
                         "(python -m llada_jax.export) and import_hf that as the base")
    return manager.restore_params(base_workdir, abstract_base, step)


def restore_workdir_params(path: str, abstract, step=None):
    """(step, params) of a workdir's checkpoint `step` (default: the latest readable), placed
    as the ShapeDtypeStructs `abstract` say. A LoRA run: its adapters plus its base."""
    ref = lora_io.base_reference(path)
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
