"""The reverse process: start from [prompt, MASK * gen_length] and reveal tokens step by
step, keeping the most confident predictions (the published generate.py).

`generate` validates its arguments on the host, then runs the whole reverse process as
one jitted computation: blocks in `lax.fori_loop`, steps in `lax.scan` (or
`lax.while_loop` with the threshold rule). Only positions that can be revealed in a
step go through the output head: the current block, plus the prompt when it holds
masks to infill.

Infilling: put `mask_id` tokens inside the prompt, e.g. `[prefix, MASK * k, suffix]`.
The holes are candidates at every step, like the current block's masks, and count into
the block's reveal budget, so they are all filled by the end of the first block. With
`gen_length=0` only the holes are filled (`steps` steps, no answer is appended).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from llada_jax import validation
from llada_jax.sampling import block_cache, eos_stop
from llada_jax.validation import special_ids
from llada_jax.sampling.guidance import guided_logits_rows
from llada_jax.sampling.reveal import Rows, num_transfer_tokens, predict_rows, select_transfer
from llada_jax.sampling.params import CACHES, REMASKING, SamplingParams

_NEG_INF = -jnp.inf


class _Options(NamedTuple):
    """Static options of one compiled reverse process."""

    prompt_len: int
    gen_length: int
    block_length: int
    steps_per_block: int
    temperature: float
    cfg_scale: float
    remasking: str
    mask_id: int
    logits_eos_inf: bool
    confidence_eos_eot_inf: bool
    eos_id: int
    eot_id: int
    threshold: float | None
    infill: bool  # the prompt holds masks: its positions are candidates too
    cache: str | None = None  # None, "prefix" or "dual" (Fast-dLLM)
    eos_early_stop: str | None = None  # None, "block" or "tail" (llada_jax.sampling.eos_stop)
    guidance: bool = False  # the batch carries cfg's unconditional copy (a shape: 2B rows)
    # Which draw rules the program holds: None (no row uses it), "on" (every row may) or
    # "auto" (skipped at run time when no row uses it: the engine's one program for all).
    noise: str | None = "auto"  # Gumbel noise (temperature > 0)
    filter: str | None = "auto"  # top-k / top-p

    @property
    def num_blocks(self):
        return max(1, self.gen_length // max(1, self.block_length))  # pure infilling: one block


def _candidate_positions(b, block_start, options: _Options):
    """(B, M) positions whose logits a step needs: the block, and the prompt if infilling."""
    pos = block_start + jnp.arange(options.block_length, dtype=jnp.int32)
    if options.infill:
        pos = jnp.concatenate([jnp.arange(options.prompt_len, dtype=jnp.int32), pos])
    return jnp.broadcast_to(pos, (b, pos.shape[0]))


class _State(NamedTuple):
    x: jax.Array  # (B, L) current tokens
    when: jax.Array  # (B, L) index of the model call that revealed each position, -1 if none
    calls: jax.Array  # model calls so far


def _transfer(state: _State, logits_BxMxV, pos_BxM, k_B, rng, options: _Options, rows: Rows,
              candidate_BxM=None, static_rule=True) -> _State:
    """One reverse step's reveal on the candidate positions (one model call's worth);
    candidate_BxM (optional) narrows which of the positions may be revealed."""
    x0, x0_p = predict_rows(logits_BxMxV, rng, options, rows, static_rule)
    x_sub = jnp.take_along_axis(state.x, pos_BxM, axis=1)
    open_BxM = x_sub == options.mask_id
    if candidate_BxM is not None:
        open_BxM = open_BxM & candidate_BxM
    confidence_BxM = jnp.where(open_BxM, x0_p, _NEG_INF)
    select = select_transfer(confidence_BxM, k_B, rows.threshold)
    rows = jnp.arange(state.x.shape[0])[:, None]
    x = state.x.at[rows, pos_BxM].set(jnp.where(select, x0, x_sub))
    when = state.when.at[rows, pos_BxM].set(jnp.where(select, state.calls, jnp.take_along_axis(state.when, pos_BxM, 1)))
    return _State(x, when, state.calls + 1)


def _cached_logits(model, params, x, mask, kv, start, options: _Options, rows: Rows):
    """Logits of the block from a partial forward pass against the cache (Fast-dLLM's prefix
    or dual cache: the queries of the block, the keys of the cache and the block)."""
    b, l = x.shape
    bl = options.block_length
    if options.cache == "prefix":  # queries: block start .. end (start is a Python int here)
        window = x[:, start:]
        positions = jnp.broadcast_to(jnp.arange(start, l, dtype=jnp.int32), window.shape)
        kv = type(kv)(kv.k[:, :, :start], kv.v[:, :, :start])
        key_mask = mask
        out_pos = jnp.broadcast_to(jnp.arange(bl, dtype=jnp.int32), (b, bl))
    else:  # dual: queries are the block; every other position comes from the cache
        window = jax.lax.dynamic_slice_in_dim(x, start, bl, axis=1)
        positions = jnp.broadcast_to(start + jnp.arange(bl, dtype=jnp.int32), window.shape)
        outside = (jnp.arange(l) < start) | (jnp.arange(l) >= start + bl)
        key_mask = jnp.concatenate([mask & outside, jnp.ones((b, bl), bool)], axis=1)
        out_pos = None
    # The window lies right of the prompt, so its unconditional copy is unchanged; with
    # cfg the cache already holds both copies (2B rows) from the block's full pass.
    return guided_logits_rows(model, params, window, jnp.zeros_like(window, bool), rows.cfg_weight, options.mask_id,
                              key_mask, guidance=options.guidance, kv_cache=kv, positions=positions,
                              output_positions=out_pos)


def _run_block(model, params, state: _State, mask, prompt_index, rng, start, blk, options: _Options,
               rows: Rows) -> _State:
    """All steps of one block: `steps_per_block` model calls, fewer for a row with a
    threshold once its block (and any hole) is filled; the loop ends when no row goes on."""
    b = state.x.shape[0]
    s = options.steps_per_block
    pos = _candidate_positions(b, start, options)
    has_threshold = jnp.isfinite(rows.threshold)

    def open_masks(x):  # masks of the block plus any holes left in the prompt
        return jnp.take_along_axis(x, pos, axis=1) == options.mask_id

    schedule = num_transfer_tokens(jnp.sum(open_masks(state.x), axis=1), s)
    rngs = jax.random.split(jax.random.fold_in(rng, blk), s)
    kw = dict(return_kv=options.cache is not None)

    def full_logits(x):
        return guided_logits_rows(model, params, x, prompt_index, rows.cfg_weight, options.mask_id, mask,
                                  guidance=options.guidance, output_positions=pos, **kw)

    def k_at(i):  # threshold rows: at least the schedule, at least one
        return jnp.where(has_threshold, jnp.maximum(schedule[:, i], 1), schedule[:, i])

    # First step: a full pass (it also fills the cache when there is one).
    out = full_logits(state.x)
    logits, kv = out if options.cache else (out, None)
    state = _transfer(state, logits, pos, k_at(0), rngs[0], options, rows)

    def later_step(c):
        state, i = c
        if options.cache is None:
            logits = full_logits(state.x)
        else:
            logits = _cached_logits(model, params, state.x, mask, kv, start, options, rows)
        return _transfer(state, logits, pos, k_at(i), rngs[i], options, rows), i + 1

    def going_on(c):  # a threshold row stops as soon as its block (and any hole) is filled
        state, i = c
        return (i < s) & jnp.any(~has_threshold | jnp.any(open_masks(state.x), axis=1))

    state, _ = jax.lax.while_loop(going_on, later_step, (state, jnp.int32(1)))
    return state


@functools.partial(jax.jit, static_argnames=("model", "options"))
def _reverse_process(model, params, x, attention_mask, rng, rows: Rows, options: _Options) -> _State:
    b, l = x.shape
    prompt_index = x != options.mask_id
    mask = jnp.ones((b, l), bool) if attention_mask is None else attention_mask
    state = _State(x, jnp.full((b, l), -1, jnp.int32), jnp.int32(0))

    def body(blk, state):
        start = options.prompt_len + blk * options.block_length
        if options.eos_early_stop is None:
            return _run_block(model, params, state, mask, prompt_index, rng, start, blk, options, rows)
        # A block in which every row is finished (no mask left) makes no model call.
        block = jax.lax.dynamic_slice_in_dim(state.x, start, options.block_length, axis=1)
        state = jax.lax.cond(jnp.any(block == options.mask_id),
                             lambda state: _run_block(model, params, state, mask, prompt_index, rng, start, blk,
                                                      options, rows),
                             lambda state: state, state)
        block = jax.lax.dynamic_slice_in_dim(state.x, start, options.block_length, axis=1)
        done = eos_stop.finished_rows(block, options.eos_id, options.eos_early_stop)
        x, when = eos_stop.fill_after(state.x, state.when, done, start + options.block_length, options.mask_id,
                                      options.eos_id, state.calls - 1)
        return _State(x, when, state.calls)

    if options.cache == "prefix":  # each block's window has its own static length: unroll
        for blk in range(options.num_blocks):
            state = body(blk, state)
        return state
    return jax.lax.fori_loop(0, options.num_blocks, body, state)


def _validate(model, prompt, attention_mask, steps, gen_length, block_length, temperature, remasking,
              mask_id, threshold, cfg_scale, cache, eos_id, eot_id, rng, eos_early_stop=None):
    """Checked and normalised arguments (see llada_jax.validation); ValueError otherwise."""
    where = "generate"

    def bad(name, value, expected):
        validation.bad(where, name, value, expected)

    vocab = validation.vocab_of(model)
    prompt = validation.token_ids(where, "prompt", prompt, vocab, ndim=2)
    if prompt.shape[1] == 0:
        bad("prompt.shape", prompt.shape, "(batch, prompt_len) with prompt_len >= 1")
    mask_id = validation.token_id(where, "mask_id", mask_id, vocab)
    eos_id = validation.token_id(where, "eos_id", eos_id, vocab)
    eot_id = validation.token_id(where, "eot_id", eot_id, vocab)
    holes = int((prompt == mask_id).sum(axis=1).max()) if prompt.size else 0
    gen_length = validation.integer(where, "gen_length", gen_length, minimum=0)
    if gen_length == 0 and holes == 0:
        bad("gen_length", gen_length, "a positive int (0 only to infill masks inside the prompt)")
    num_blocks = 1
    if gen_length:
        block_length = validation.integer(where, "block_length", block_length, minimum=1)
        if gen_length % block_length:
            bad("block_length", block_length, f"a positive divisor of gen_length={gen_length}")
        num_blocks = gen_length // block_length
    steps = validation.integer(where, "steps", steps, minimum=1)
    if steps % num_blocks:
        bad("steps", steps, f"a positive multiple of the number of blocks ({num_blocks})")
    if steps > gen_length + holes:
        bad("steps", steps, f"<= gen_length + masks in the prompt ({gen_length + holes})")
    if cache not in CACHES:
        bad("cache", cache, f"one of {CACHES}")
    if cache is not None and holes:
        bad("cache", cache, "None when the prompt holds masks to infill (cached steps do not rerun the prompt)")
    if eos_early_stop not in eos_stop.EOS_EARLY_STOP:
        bad("eos_early_stop", eos_early_stop, f"one of {eos_stop.EOS_EARLY_STOP}")
    if eos_early_stop is not None and gen_length == 0:
        bad("eos_early_stop", eos_early_stop, "None when gen_length=0 (pure infilling has no answer to end)")
    if remasking not in REMASKING:
        bad("remasking", remasking, f"one of {REMASKING}")
    temperature = validation.number(where, "temperature", temperature, minimum=0)
    cfg_scale = validation.number(where, "cfg_scale", cfg_scale, minimum=0)
    if threshold is not None:
        threshold = validation.number(where, "threshold", threshold)
        if not 0 < threshold <= 1:
            bad("threshold", threshold, "None or in (0, 1]")
    if attention_mask is not None:
        attention_mask = np.asarray(attention_mask)
        if attention_mask.shape != prompt.shape:
            bad("attention_mask.shape", attention_mask.shape, f"the prompt's shape {prompt.shape}")
    config = getattr(model, "config", None)
    if config is not None and prompt.shape[1] + gen_length > config.max_sequence_length:
        bad("prompt_len + gen_length", prompt.shape[1] + gen_length,
            f"<= max_sequence_length={config.max_sequence_length}")
    rng = jax.random.key(0) if rng is None else validation.rng_key(where, "rng", rng)
    return dict(prompt=prompt, attention_mask=attention_mask, steps=steps, gen_length=gen_length,
                block_length=block_length, temperature=temperature, cfg_scale=cfg_scale, mask_id=mask_id,
                threshold=threshold, eos_id=eos_id, eot_id=eot_id, rng=rng)


_OPTION_DEFAULTS = dict(steps=128, gen_length=128, block_length=128, temperature=0.0, cfg_scale=0.0,
                       remasking="low_confidence", logits_eos_inf=False, confidence_eos_eot_inf=False,
                       threshold=None, cache=None, eos_early_stop=None, top_k=0, top_p=1.0)


def generate(model, params, prompt, *, attention_mask=None, steps=128, gen_length=128, block_length=128,
             temperature=0.0, cfg_scale=0.0, remasking="low_confidence", mask_id=None,
             logits_eos_inf=False, confidence_eos_eot_inf=False, eos_id=None, eot_id=None,
             threshold=None, rng=None, return_stats=False, cache=None, eos_early_stop=None,
             top_k=0, top_p=1.0, sampling: SamplingParams | None = None, **block_options):
    """Sample answers for `prompt` (B, P) int ids; returns int32 (B, P + gen_length).

    A block-causal model (`model.config.block_size` > 0) samples with its exact block KV
    cache instead (`llada_jax.sampling.block_cache.generate`: LLaDA 2.x's rules, `steps`
    per block, `block_length` the model's block size, also `top_k`, `top_p`, `minimal_topk`).

    Semantics are those of the reference `generate` (the published generate.py). Left-pad prompts of
    different lengths with EOS and pass `attention_mask` (B, P) with 0 on padding.
    Mask tokens inside the prompt are infilled by the same process (they compete with the
    current block for each step's reveals, as in the reference).
    threshold: Fast-dLLM's rule; each step reveals every masked position of the block whose
    confidence exceeds it, and at least as many as the fixed schedule (at least one), so
    `steps` bounds the number of model calls and a finished block ends early.
    cache: Fast-dLLM's approximate block-wise KV cache: "prefix" reruns
    the block and everything after it against cached keys/values of the positions before
    the block; "dual" reruns only the block against cached keys/values of every other
    position. The cache is filled by a full pass at each block's start. None is exact.
    eos_early_stop: the end-of-answer rule (llada_jax.sampling.eos_stop): None (off), "block" (a row
    whose block came out entirely EOS is finished) or "tail" (a row whose block ends in
    EOS is finished). A finished row's later positions are set to EOS without model calls,
    and blocks with no mask left in any row make none; exact whenever the model would have
    revealed those positions as EOS.
    return_stats: also return {"model_calls": int, "reveal_step": (B, P + gen_length) int32},
    where every forward pass, full or partial, counts one call (a guided cfg pass too), and
    reveal_step[b, j] is the 0-based call whose prediction revealed position j (-1: given).
    mask_id, eos_id, eot_id: default to model.config's mask and eos ids (eot: the eos id;
    pass `tokenizer.eot_id` for chat models); the published LLaDA-8B ids for a model
    without a config. Every id, the prompt and the options are checked (ValueError) first.
    top_k / top_p: the token draw keeps each position's k most likely tokens (0: off) /
    its smallest set of probability >= top_p (1: off).
    sampling: the options as one `SamplingParams` instead of keywords (its seed is not
    used: `rng` is the batch's random stream). Temperature, threshold, cfg_scale, top-k
    and top-p are traced values: changing them compiles nothing new; turning noise
    (temperature > 0), filtering (top-k/p) or cfg (it doubles the batch) on or off picks
    another program. The serving engine's one program holds them all.
    """
    if sampling is not None:
        given = {k: v for k, v in locals().items() if k in _OPTION_DEFAULTS and v != _OPTION_DEFAULTS[k]}
        if given:
            raise ValueError(f"generate: pass the options as keywords or as sampling=, not both (got {sorted(given)})")
        if not isinstance(sampling, SamplingParams):
            validation.bad("generate", "sampling", sampling, "a SamplingParams")
        d = sampling.to_dict()
        steps, gen_length, block_length, temperature, cfg_scale, remasking = (
            d["steps"], d["gen_length"], d["block_length"], d["temperature"], d["cfg_scale"], d["remasking"])
        logits_eos_inf, confidence_eos_eot_inf, threshold, cache, eos_early_stop, top_k, top_p = (
            d["logits_eos_inf"], d["confidence_eos_eot_inf"], d["threshold"], d["cache"], d["eos_early_stop"],
            d["top_k"], d["top_p"])
        if steps is None:  # pure infilling: one step per hole
            steps = int((np.asarray(prompt) == special_ids(model, mask_id)[0]).sum(axis=-1).max())
    if getattr(getattr(model, "config", None), "block_size", 0):
        return block_cache.generate(model, params, prompt, attention_mask=attention_mask, steps=steps,
                                    gen_length=gen_length, block_length=block_length, temperature=temperature,
                                    remasking=remasking, threshold=threshold, mask_id=mask_id, eos_id=eos_id, rng=rng,
                                    return_stats=return_stats, cache=cache, cfg_scale=cfg_scale,
                                    eos_early_stop=bool(eos_early_stop), top_k=top_k or None,
                                    top_p=None if top_p == 1.0 else top_p, **block_options)
    if block_options:
        raise ValueError(f"generate: {sorted(block_options)} apply to block-causal models only "
                         "(model.config.block_size > 0)")
    mask_id, eos_id, eot_id = special_ids(model, mask_id, eos_id, eot_id)
    a = _validate(model, prompt, attention_mask, steps, gen_length, block_length, temperature, remasking,
                  mask_id, threshold, cfg_scale, cache, eos_id, eot_id, rng, eos_early_stop)
    prompt, attention_mask, steps, gen_length, block_length = (
        a["prompt"], a["attention_mask"], a["steps"], a["gen_length"], a["block_length"])
    temperature, cfg_scale, mask_id, threshold, eos_id, eot_id, rng = (
        a["temperature"], a["cfg_scale"], a["mask_id"], a["threshold"], a["eos_id"], a["eot_id"], a["rng"])
    b, p = prompt.shape
    top_k = validation.integer("generate", "top_k", top_k, minimum=0)
    top_p = validation.number("generate", "top_p", top_p)
    if not 0 < top_p <= 1:
        validation.bad("generate", "top_p", top_p, "in (0, 1] (1: off)")
    # Values travel as per-row arrays (traced); only the shapes and rules are static.
    options = _Options(prompt_len=p, gen_length=gen_length, block_length=block_length if gen_length else 0,
                       steps_per_block=steps // max(1, gen_length // max(1, block_length)),
                       temperature=0.0, cfg_scale=0.0, remasking=remasking, mask_id=int(mask_id),
                       logits_eos_inf=bool(logits_eos_inf), confidence_eos_eot_inf=bool(confidence_eos_eot_inf),
                       eos_id=int(eos_id), eot_id=int(eot_id), threshold=None,
                       infill=bool((prompt == mask_id).any()), cache=cache, eos_early_stop=eos_early_stop,
                       guidance=cfg_scale > 0, noise="on" if temperature > 0 else None,
                       filter="on" if top_k or top_p < 1 else None)
    rows = Rows(np.full(b, temperature, np.float32), np.full(b, np.inf if threshold is None else threshold, np.float32),
                np.full(b, cfg_scale + 1.0, np.float32), np.full(b, top_k, np.int32), np.full(b, top_p, np.float32),
                np.full(b, REMASKING.index(remasking), np.int32))
    x = np.full((b, p + gen_length), mask_id, np.int32)
    x[:, :p] = prompt
    mask = None
    if attention_mask is not None:
        mask = np.concatenate([attention_mask.astype(bool), np.ones((b, gen_length), bool)], axis=1)
    state = _reverse_process(model, params, jnp.asarray(x), mask, rng, rows, options)
    if return_stats:
        return state.x, {"model_calls": int(state.calls), "reveal_step": np.asarray(state.when)}
    return state.x
