"""G rollouts per prompt from the current policy, through the serving engine.

The rollouts take the one batched generation path the server and lm-eval take
(`llada_jax.serving.Engine`): all B * G requests are queued at once and run in `slots`
rows per engine step (default: all of them in one batch). Each rollout is its own
request with its own seed, drawn from the batch key, so the G samples of a prompt
differ and a batch is a pure function of (params, prompts, rng): a resumed run draws the
same rollouts. Any engine option (blocks, threshold, the dual cache, remasking,
temperature, top-k/p) applies. Positions after a completion's first EOS hold EOS (the
engine ends a request at the block holding it).
"""

from __future__ import annotations

import numpy as np

from llada_jax.sampling.params import SamplingParams
from llada_jax.serving.engine import Engine, canvas_length, positions_needed, seeds_from


def sampling_params(rl_cfg) -> SamplingParams:
    """The rollouts' SamplingParams from the `rl` config section (sampler_steps: steps;
    threshold 0: off; cache "": none)."""
    return SamplingParams(gen_length=rl_cfg["gen_length"], block_length=rl_cfg["block_length"],
                          steps=rl_cfg["sampler_steps"], temperature=rl_cfg["temperature"],
                          remasking=rl_cfg["remasking"], threshold=rl_cfg["threshold"] or None,
                          cache=rl_cfg["cache"] or None)


def engine(model, params, *, slots: int, prompt_len: int, sampling: SamplingParams, block_width: int) -> Engine:
    """An engine for prompts of `prompt_len` tokens and `sampling`'s answers in a window of
    `block_width`: one canvas bucket, so one compiled program per (slots, bucket, width)
    however often it is built (the program cache is the process's)."""
    need = positions_needed(prompt_len, sampling, block_width, bool(model.config.block_size))
    bucket = max(block_width + 1, canvas_length(need, model.config.max_sequence_length))
    return Engine(model, params, slots=slots, buckets=(bucket,), block_width=block_width, cache=sampling.cache)


def rollout(model, params, prompts_BxP, *, num_generations: int, rng, sampling: SamplingParams,
            slots: int | None = None, block_width: int | None = None):
    """(B * G, P + gen_length) int32 sequences: prompt b's G completions are rows
    b * G .. b * G + G - 1, row i drawn with its own seed (the i-th of `seeds_from(rng)`).
    slots: engine rows per step (default B * G); block_width: the engine's window
    (default the block length; pass the widest block of the run to share one program)."""
    prompts = np.repeat(np.asarray(prompts_BxP, np.int32), num_generations, axis=0)
    n, p = prompts.shape
    eng = engine(model, params, slots=slots or n, prompt_len=p, sampling=sampling,
                 block_width=block_width or sampling.block_length)
    done = eng.generate([list(row) for row in prompts], [sampling.replace(seed=s) for s in seeds_from(rng, n)])
    out = np.full((n, p + sampling.gen_length), model.config.eos_token_id, np.int32)
    out[:, :p] = prompts
    for i, r in enumerate(done):
        out[i, p:p + len(r.tokens)] = r.tokens
    return out
