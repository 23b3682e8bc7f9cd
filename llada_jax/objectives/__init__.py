"""Training objectives: the diffusion forward process and its weighted losses
(`diffusion`), the one Monte Carlo likelihood (`likelihood`), and the registry of
objectives behind one interface (`base.Objective`).

A new objective is one file here defining `OBJECTIVE` (an `Objective` instance) plus one
line in OBJECTIVES; `config.data.kind` (and `llada_jax.experiments`) select it by name
(any of `training_kinds()`: the objectives of a mask predictor, or of a causal model with
`config.model.causal`), `config.rl.algorithm` an
RL one (`Objective.rl`).
Modules are imported on first use, so the registry costs nothing at import time.
"""

from __future__ import annotations

import importlib

OBJECTIVES = {
    "pretrain": "llada_jax.objectives.pretrain",
    "sft": "llada_jax.objectives.sft",
    "autoregressive": "llada_jax.objectives.autoregressive",
    "block_diffusion": "llada_jax.objectives.block_diffusion",  # BD3-LM; block-causal models (model.block_size)
    "block_sft": "llada_jax.objectives.block_sft",
    "grpo": "llada_jax.objectives.grpo",  # RL objectives (base.Objective.rl): run by llada_jax.rl.step
    "vrpo": "llada_jax.objectives.vrpo",
}


def get(name: str):
    """The registered objective `name` (a `base.Objective`); ValueError for an unknown one."""
    if name not in OBJECTIVES:
        raise ValueError(f"objective {name!r}: expected one of {tuple(OBJECTIVES)}")
    return importlib.import_module(OBJECTIVES[name]).OBJECTIVE


def training_kinds(causal: bool = False) -> tuple[str, ...]:
    """The `config.data.kind` values a training run takes: every registered objective that
    is not RL and trains a mask predictor, or with `causal` a causal model (the baseline)."""
    return tuple(n for n in OBJECTIVES if not get(n).rl and get(n).causal == causal)


def data_kind(name: str) -> str:
    """The data a training kind reads: "sft" (rows with a prompt mask) or "pretrain"."""
    return "sft" if "prompt_mask" in get(name).fields else "pretrain"
