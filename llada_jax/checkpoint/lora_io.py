"""LoRA workdirs: their config, their checkpoints and merging (the PEFT export is in
`llada_jax.export`).

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

import os

import jax

from llada_jax.checkpoint import manager as checkpoint
from llada_jax.model.adapters import lora
from llada_jax.model import LLaDAConfig


def base_reference(workdir: str):
    """run.json's `lora_base` of a workdir ({"workdir", "step"}), or None."""
    path = os.path.join(workdir, "run.json")
    return checkpoint.run_info(workdir).get("lora_base") if os.path.isfile(path) else None


def merge(config: LLaDAConfig, params):
    """(config without LoRA, merged params): W + alpha/rank A B in float32 per weight."""
    if not config.lora.rank:
        return config, params
    return config.replace(lora=lora.LoRAConfig()), jax.jit(lambda p: lora.merge(config.lora, p))(params)
