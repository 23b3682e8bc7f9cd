"""The rules of an RL run's config (`python -m llada_jax.rl`): the shared sections by
`rules.train_config`, then the `rl` section, checked before anything is restored or
compiled. Each error is a ValueError naming the field, the value and what was expected.

- `rl_config(config, num_devices)`: what `rl.loop.train_rl` checks (through
  `training.run.build_run`): the algorithm, the start (`rl.init_from`, an SFT workdir
  that is not a LoRA run; `train.init_from` unset), and per algorithm: GRPO's synthetic
  prompts, rewards, group size, clipping and KL, and rollout settings; VRPO's pairs file.
- `pair_sampling(config)`: what `python -m llada_jax.rl.pairs` checks: a group of at least
  two samples, the rewards, the rollout settings.
"""

from __future__ import annotations

import os

from llada_jax.checkpoint import load
from llada_jax.config import rules
from llada_jax.rl import rewards as rewards_lib
from llada_jax.rl import rollout as rollout_lib

ALGORITHMS = ("grpo", "vrpo")


def rl_config(config, num_devices: int) -> tuple[int, ...]:
    """ValueError naming the field, before anything compiles: the shared sections
    (`rules.train_config`), then the rl section. Returns the mesh dims."""
    dims = rules.train_config(config, num_devices)
    r, d = config.rl, config.data
    if r.algorithm not in ALGORITHMS:
        raise ValueError(f"config.rl.algorithm={r.algorithm!r}: expected one of {ALGORITHMS}")
    if not r.init_from:
        raise ValueError("config.rl.init_from is empty: expected the SFT workdir to start from "
                         "(--config.rl.init_from=SFT_WORKDIR)")
    if not os.path.isdir(r.init_from):
        raise ValueError(f"config.rl.init_from={r.init_from!r}: no such directory (expected an SFT workdir)")
    load.check_not_lora(r.init_from, "config.rl.init_from")
    if config.train.init_from:
        raise ValueError("config.train.init_from is set: an RL run starts from config.rl.init_from only")
    if r.algorithm == "grpo":
        if d.source != "synthetic":
            raise ValueError(f"config.data.source={d.source!r}: GRPO's prompts come from a checkable task; "
                             "expected 'synthetic'")
        rewards(r)
        if r.num_generations < 2:
            raise ValueError(f"config.rl.num_generations={r.num_generations}: expected >= 2 (a group)")
        if r.num_iterations < 1 or not 0 <= r.p_mask_prompt < 1 or r.epsilon <= 0 or r.beta < 0:
            raise ValueError(f"config.rl: num_iterations={r.num_iterations} (>= 1), p_mask_prompt="
                             f"{r.p_mask_prompt} (in [0, 1)), epsilon={r.epsilon} (> 0), beta={r.beta} (>= 0)")
        _rollouts(r)
    else:
        if not r.pairs or not os.path.isfile(r.pairs):
            raise ValueError(f"config.rl.pairs={r.pairs!r}: expected a preference-pair JSONL file for VRPO")
        if r.vrpo_n < 1 or r.beta <= 0:
            raise ValueError(f"config.rl: vrpo_n={r.vrpo_n} (>= 1), beta={r.beta} (> 0 for VRPO)")
    return dims


def rewards(r) -> tuple[str, ...]:
    """config.rl.rewards as reward names (`rewards.parse`), its error naming the field."""
    try:
        return rewards_lib.parse(r.rewards)
    except ValueError as e:
        raise ValueError(f"config.rl.{e}") from None


def _rollouts(r) -> None:
    """The rollout settings: they run on the serving engine, which takes at most one step
    per answer token and the dual cache or none."""
    if r.sampler_steps < 1 or r.gen_length < 1:
        raise ValueError(f"config.rl.sampler_steps={r.sampler_steps}, gen_length={r.gen_length}: expected >= 1")
    if r.sampler_steps > r.gen_length or r.cache not in ("", "dual"):
        raise ValueError(f"config.rl.sampler_steps={r.sampler_steps} (<= gen_length={r.gen_length}), "
                         f"cache={r.cache!r} ('' or 'dual'): the rollouts run on the serving engine")
    rollout_lib.sampling_params(r)  # ValueError naming the SamplingParams field


def pair_sampling(config) -> None:
    """The rl fields `python -m llada_jax.rl.pairs` samples preference pairs with: G >= 2
    samples per prompt, known rewards, SamplingParams the rollouts accept."""
    if config.rl.num_generations < 2:
        raise ValueError(f"config.rl.num_generations={config.rl.num_generations}: expected >= 2 (a pair needs "
                         "two samples)")
    rewards(config.rl)
    rollout_lib.sampling_params(config.rl)  # ValueError naming the SamplingParams field
