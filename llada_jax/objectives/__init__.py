"""Training objectives: the diffusion forward process and its weighted losses
(`diffusion`), the one Monte Carlo likelihood (`likelihood`), and the registry of
objectives behind one interface (`base.Objective`).

A new objective is one file here defining `OBJECTIVE` (an `Objective` instance) plus one
line in OBJECTIVES; `config.data.kind` (and `llada_jax.experiments`) select it by name,
`config.rl.algorithm` an RL one (`Objective.rl`).
Modules are imported on first use, so the registry costs nothing at import time.
"""

from __future__ import annotations

import importlib

OBJECTIVES = {
    "pretrain": "llada_jax.objectives.pretrain",
    "sft": "llada_jax.objectives.sft",
    "autoregressive": "llada_jax.objectives.autoregressive",
    "grpo": "llada_jax.objectives.grpo",  # RL objectives (base.Objective.rl): run by llada_jax.rl.step
    "vrpo": "llada_jax.objectives.vrpo",
}


def training_kinds() -> tuple[str, ...]:
    """The objectives a training run (`config.data.kind`) takes: a mask predictor's (not
    causal, not RL)."""
    from llada_jax.objectives.base import RLObjective

    return tuple(n for n in OBJECTIVES if not isinstance(get(n), RLObjective) and not get(n).causal)


def rl_algorithms() -> tuple[str, ...]:
    """The RL objectives (`config.rl.algorithm`), run by llada_jax.rl.step."""
    from llada_jax.objectives.base import RLObjective

    return tuple(n for n in OBJECTIVES if isinstance(get(n), RLObjective))


def get(name: str):
    """The registered objective `name` (a `base.Objective`); ValueError for an unknown one."""
    if name not in OBJECTIVES:
        raise ValueError(f"objective {name!r}: expected one of {tuple(OBJECTIVES)}")
    return importlib.import_module(OBJECTIVES[name]).OBJECTIVE
