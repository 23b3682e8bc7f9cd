"""G rollouts per prompt from the current policy, with the project's jitted sampler.

All B * G sequences go through one `sampling.sampler.generate` call (one batch: the rollouts are
vectorised, not looped), so any sampler option (blocks, threshold, cache, remasking,
temperature) applies. A batch is a pure function of (params, prompts, rng).
"""

from __future__ import annotations

import numpy as np

from llada_jax.sampling.sampler import generate

SAMPLER_FIELDS = ("gen_length", "block_length", "temperature", "remasking", "threshold", "cache")


def sampler_options(rl_cfg) -> dict:
    """generate() keyword arguments from the `rl` config section (sampler_steps: steps;
    threshold 0: off; cache "": none)."""
    kw = {k: rl_cfg[k] for k in SAMPLER_FIELDS}
    kw["steps"] = rl_cfg["sampler_steps"]
    kw["threshold"] = kw["threshold"] or None
    kw["cache"] = kw["cache"] or None
    return kw


def rollout(model, params, prompts_BxP, *, num_generations: int, rng, sampler: dict, mask_id=None, eos_id=None):
    """(B * G, P + gen_length) int32 sequences: prompt b's G completions are rows
    b * G .. b * G + G - 1. sampler: generate() options (see `sampler_options`); mask_id,
    eos_id: default the model's (`model.config.mask_token_id`, `eos_token_id`), as generate's."""
    prompts = np.repeat(np.asarray(prompts_BxP, np.int32), num_generations, axis=0)
    return np.asarray(generate(model, params, prompts, rng=rng, mask_id=mask_id, eos_id=eos_id, **sampler))
