"""The base a PEFT adapter export applies to: an exported Hugging Face folder whose weights
are the ones the adapters were trained against.

LoRA trains against the frozen base as stored (`lora.base_dtype`, bfloat16 by default), so
the adapters reproduce the merged export only on a base with exactly those values: the base
workdir exported with `--dtype` equal to the base dtype (or wider when the workdir itself
holds bf16 values). A float32 export of a float32 base differs from the bf16-rounded base the
adapters saw by about 2^-9 relative per weight, which moves the tiny test model's logits by
~1e-2 (see README, "LoRA fine-tuning"). `check_dir` runs before any restore, `check_weights`
compares one adapted tensor of layer 0 bit for bit.
"""

from __future__ import annotations

import os

import numpy as np

from llada_jax.interop import layout, safetensors_io


def fix_command(base_workdir: str | None, out: str, base_dtype: str) -> str:
    return (f"python -m llada_jax.export --workdir={base_workdir or 'BASE_WORKDIR'} --out={out} "
            f"--dtype={base_dtype}")


def check_dir(base_model: str | None, base_workdir: str | None, base_dtype: str):
    """ValueError unless `base_model` is an exported folder (config.json and safetensors)."""
    if not base_model:
        raise ValueError("--peft needs --base_model=HF_DIR, the exported base folder the adapters apply to "
                         f"(written as adapter_config.json's base_model_name_or_path); make it with: "
                         f"{fix_command(base_workdir, 'HF_DIR', base_dtype)}")
    if not os.path.isfile(os.path.join(base_model, "config.json")):
        raise ValueError(f"--base_model={base_model!r}: expected an exported Hugging Face folder (config.json); "
                         f"make it with: {fix_command(base_workdir, base_model, base_dtype)}")


def check_weights(config, params, base_model: str, base_workdir: str | None, gather):
    """ValueError when the base folder's first adapted tensor of layer 0 is not, bit for bit,
    the frozen base the adapters were trained against (a float32 export of a base they saw
    as bfloat16, another model, another step). gather(leaf, idx): export.gatherer(float32)."""
    found = next((p for t in config.lora.targets if (p := layout.block_path(config, 0, t)) is not None), None)
    if found is None:
        raise ValueError(f"config.lora.targets={','.join(config.lora.targets)!r}: block 0 has none of these weights, "
                         f"so the adapters cannot be checked against --base_model={base_model!r}")
    path, idx = found
    name, to_t = next((n, t) for n, p, i, t, _ in layout.tensor_map(config) if p == path and i == idx)
    leaf = layout.leaf(params, path)
    want = np.asarray(to_t(gather(leaf, idx)), np.float32)
    reader = safetensors_io.DirReader(base_model)
    if name not in reader.entries:
        raise ValueError(f"--base_model={base_model!r}: holds no tensor {name!r}; expected an export of the base")
    have = reader.read(name).astype(np.float32)
    if have.shape != want.shape or not np.array_equal(have, want):
        diff = float(np.abs(have - want).max()) if have.shape == want.shape else float("nan")
        base_dtype = str(np.dtype(leaf.dtype))  # the frozen base's storage, lora.base_dtype
        raise ValueError(f"--base_model={base_model!r}: its {name} ({reader.dtype(name)}) is not the base the "
                         f"adapters were trained against ({base_dtype}; max |diff| {diff:.3g}), so the adapters "
                         f"would not give the merged logits; export the base with: "
                         f"{fix_command(base_workdir, base_model, base_dtype)} --overwrite")
