"""LoRA workdirs: their config, their checkpoints, merging, and the PEFT export.

A LoRA run (`--config.lora.rank=16 --config.train.init_from=BASE`) keeps the base model
once, by reference: its checkpoints hold only the adapters and their optimizer state;
run.json records `lora_base` = {"workdir": absolute path of BASE, "step": the base step
used}. Restoring a LoRA workdir (resume, sampling, evaluation, export) reads the adapters
from its own checkpoint and the base from that exact step of BASE, so BASE must stay
where it is (an `import_hf` workdir never changes; a training workdir keeps the step
while it is among its kept checkpoints). Export the merged weights to get a
self-contained copy.

Export: `python -m llada_jax.export --workdir=LORA_DIR --out=DIR` writes the merged
weights (W + alpha/rank A B) as a plain Hugging Face directory; with `--peft` it writes
the adapters alone in the PEFT format (adapter_config.json + adapter_model.safetensors,
module names of our exported PyTorch model) for `peft.PeftModel.from_pretrained(base, DIR)`.
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np

from llada_jax import checkpoint, hf, lora
from llada_jax.model import DTYPES, LLaDAConfig

PEFT_PREFIX = "base_model.model."  # PeftModel -> LoraModel -> our model


def validate(config):
    """ValueError naming the config.lora field that cannot run (before anything compiles)."""
    lc = config.lora
    lora.from_config(lc)  # rank, alpha, dropout, targets
    if lc.base_dtype not in DTYPES:
        raise ValueError(f"config.lora.base_dtype={lc.base_dtype!r}: expected one of {DTYPES}")


def check_base(config):
    """A LoRA training run needs its base: ValueError when train.init_from is empty."""
    if config.lora.rank and not config.train.init_from:
        raise ValueError(f"config.lora.rank={config.lora.rank}: LoRA fine-tunes a model; expected "
                         "config.train.init_from=WORKDIR (a training or import_hf workdir) for the base")


def model_config(config, mcfg: LLaDAConfig) -> LLaDAConfig:
    """`mcfg` with the experiment config's adapters, the base stored as lora.base_dtype."""
    if not config.lora.rank:
        return mcfg
    return mcfg.replace(lora=lora.from_config(config.lora), param_dtype=config.lora.base_dtype)


def _restore_step(path, abstract, step=None):
    """(step, params) of `step` (default: the latest readable) of a workdir's checkpoints."""
    if step is None:
        return checkpoint.restore_params(path, abstract)
    import orbax.checkpoint as ocp

    ckpt = checkpoint.Checkpointer(checkpoint.checkpoint_dir(path), read_only=True, async_save=False)
    try:
        if step not in ckpt.all_steps():
            raise ValueError(f"step {step}: not among the saved steps {ckpt.all_steps()} of {path!r}")
        out = ckpt.manager.restore(step, args=ocp.args.Composite(params=ocp.args.StandardRestore(abstract)))
    finally:
        ckpt.close()
    return step, out["params"]


def base_reference(workdir: str):
    """run.json's `lora_base` of a workdir ({"workdir", "step"}), or None."""
    path = os.path.join(workdir, "run.json")
    return checkpoint.run_info(workdir).get("lora_base") if os.path.isfile(path) else None


def load_base(base_workdir: str, abstract_base, step=None):
    """(step, base params) from a non-LoRA workdir, cast to the abstract dtypes on restore
    (orbax casts while reading, so an fp32 checkpoint becomes a bf16 base without an fp32 copy)."""
    if base_reference(base_workdir) is not None:
        raise ValueError(f"config.train.init_from={base_workdir!r} is itself a LoRA run; export it merged "
                         "(python -m llada_jax.export) and import_hf that as the base")
    return _restore_step(base_workdir, abstract_base, step)


def restore_params(workdir: str, abstract_params, step=None):
    """(step, params) of a workdir. For a LoRA run: the adapters from its checkpoint and the
    base from the workdir and step run.json references, combined (nothing is merged)."""
    ref = base_reference(workdir)
    if ref is None:
        return _restore_step(workdir, abstract_params, step)
    abstract_adapters, abstract_base = lora.split(abstract_params)
    step, adapters = _restore_step(workdir, abstract_adapters, step)
    _, base = load_base(ref["workdir"], abstract_base, ref["step"])
    return step, lora.combine(adapters, base)


def merge(config: LLaDAConfig, params):
    """(config without LoRA, merged params): W + alpha/rank A B in float32 per weight."""
    if not config.lora.rank:
        return config, params
    return config.replace(lora=lora.LoRAConfig()), jax.jit(lambda p: lora.merge(config.lora, p))(params)


def peft_target_regex(config: LLaDAConfig) -> str:
    """PEFT target_modules (a regex that must match a module's full name): the adapted
    projections of the blocks only, not the output head (also named ff_out)."""
    return r"model\.transformer\.blocks\.\d+\.(" + "|".join(config.lora.targets) + ")"


def save_peft(config: LLaDAConfig, params, path: str, *, base_model: str | None = None,
              dtype="float32", overwrite: bool = False) -> list[str]:
    """Write the adapters of `params` in the PEFT format into `path`: adapter_config.json
    and adapter_model.safetensors with `base_model.model.model.transformer.blocks.{i}.{name}
    .lora_{A,B}.weight` as PyTorch Linear weights (A: [r, in], B: [out, r]), loadable with
    `peft.PeftModel.from_pretrained(our exported base model, path)`. Returns the file names.
    A non-empty `path` is refused unless `overwrite` (then replaced whole), as for the HF export."""
    from llada_jax.export import check_target, gather, write_dir_atomically

    cfg = config.lora
    if not cfg.rank:
        raise ValueError("save_peft: the model has no LoRA adapters (config.lora.rank=0)")
    check_target(path, overwrite)
    np_dtype = hf.np_dtype(dtype)
    entries, tensors = [], []
    for i in range(config.n_layers):
        for name in cfg.targets:
            p, idx = hf._block_path(config, i, name)
            a_path, b_path = p[:-1] + (name + lora.SUFFIX_A,), p[:-1] + (name + lora.SUFFIX_B,)
            key = f"{PEFT_PREFIX}{hf.PREFIX}blocks.{i}.{name}"
            a = gather(hf._leaf(params, a_path), idx, np_dtype)
            b = gather(hf._leaf(params, b_path), idx, np_dtype)
            a_t = np.ascontiguousarray(a.reshape(-1, cfg.rank).T)  # [r, in]
            b_t = np.ascontiguousarray(b.reshape(cfg.rank, -1).T)  # [out, r]
            for suffix, t in ((".lora_A.weight", a_t), (".lora_B.weight", b_t)):
                entries.append((key + suffix, t.shape))
                tensors.append(t)
    if jax.process_index() != 0:
        return ["adapter_config.json", "adapter_model.safetensors"]

    def write(tmp):
        out = hf.ShardWriter(os.path.join(tmp, "adapter_model.safetensors"), entries, np_dtype)
        for (name, _), t in zip(entries, tensors):
            out.write(name, t)
        out.close()
        adapter_config = {
            "peft_type": "LORA", "task_type": None, "base_model_name_or_path": base_model,
            "r": cfg.rank, "lora_alpha": cfg.alpha, "lora_dropout": cfg.dropout,
            "target_modules": peft_target_regex(config), "bias": "none", "fan_in_fan_out": False,
            "inference_mode": True, "init_lora_weights": True, "use_rslora": False, "use_dora": False,
            "modules_to_save": None, "layers_to_transform": None, "layers_pattern": None,
            "rank_pattern": {}, "alpha_pattern": {},
        }
        with open(os.path.join(tmp, "adapter_config.json"), "w") as f:
            json.dump(adapter_config, f, indent=2)
            f.write("\n")

    write_dir_atomically(path, write)
    return ["adapter_config.json", "adapter_model.safetensors"]
