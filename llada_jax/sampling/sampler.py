"""The reverse process: start from [prompt, MASK * gen_length] and reveal tokens step by
step, keeping the most confident predictions (facts section 6).

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
from llada_jax.sampling import eos_stop
from llada_jax.validation import special_ids
from llada_jax.sampling import confidence
from llada_jax.sampling.guidance import guided_logits

REMASKING = tuple(confidence.RULES)
CACHES = (None, "prefix", "dual")
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
    cache: str | None = None  # None, "prefix" or "dual" (facts section 6b)
    eos_early_stop: str | None = None  # None, "block" or "tail" (llada_jax.sampling.eos_stop)

    @property
    def num_blocks(self):
        return max(1, self.gen_length // max(1, self.block_length))  # pure infilling: one block


def num_transfer_tokens(n_masked, steps):
    """Tokens revealed at each of `steps` steps: n // s each, one more in the first n % s.

    n_masked: (B,) int. Returns (B, steps) int32.
    """
    base = n_masked[:, None] // steps
    extra = jnp.arange(steps)[None, :] < (n_masked % steps)[:, None]
    return (base + extra).astype(jnp.int32)


def select_transfer(confidence_BxM, k_B, threshold=None):
    """Which candidates to reveal: the k most confident per row (ties to the lower index),
    and with `threshold` also every candidate whose confidence exceeds it.
    Positions with confidence -inf are never candidates."""
    order = jnp.argsort(-confidence_BxM, axis=-1, stable=True)
    rank = jnp.argsort(order, axis=-1)
    select = rank < k_B[:, None]
    if threshold is not None:
        select = select | (confidence_BxM > threshold)
    return select & (confidence_BxM > _NEG_INF)


def first_argmax(x):
    """argmax over the last axis (first index of the max). XLA:CPU's argmax, a variadic
    value+index reduce, is about 4x slower than this max + min-index pair on a vocabulary."""
    m = jnp.max(x, axis=-1, keepdims=True)
    iota = jax.lax.broadcasted_iota(jnp.int32, x.shape, x.ndim - 1)
    return jnp.min(jnp.where(x == m, iota, x.shape[-1]), axis=-1)


def predict(logits_BxMxV, rng, options: _Options):
    """Candidate tokens x0 and their confidence for the given positions (facts section 6)."""
    if options.logits_eos_inf:
        logits_BxMxV = logits_BxMxV.at[..., options.eos_id].set(_NEG_INF)
    noise_rng, rand_rng = jax.random.split(rng)
    scores = logits_BxMxV.astype(jnp.float32)
    if options.temperature > 0:  # Gumbel-max in float32: argmax(logits + T * g)
        scores = scores + options.temperature * jax.random.gumbel(noise_rng, scores.shape, jnp.float32)
    x0 = first_argmax(scores)
    return x0, confidence.RULES[options.remasking](logits_BxMxV, x0, rand_rng, options)


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


def _transfer(state: _State, logits_BxMxV, pos_BxM, k_B, rng, options: _Options) -> _State:
    """One reverse step's reveal on the candidate positions (one model call's worth)."""
    x0, x0_p = predict(logits_BxMxV, rng, options)
    x_sub = jnp.take_along_axis(state.x, pos_BxM, axis=1)
    confidence_BxM = jnp.where(x_sub == options.mask_id, x0_p, _NEG_INF)
    select = select_transfer(confidence_BxM, k_B, options.threshold)
    rows = jnp.arange(state.x.shape[0])[:, None]
    x = state.x.at[rows, pos_BxM].set(jnp.where(select, x0, x_sub))
    when = state.when.at[rows, pos_BxM].set(jnp.where(select, state.calls, jnp.take_along_axis(state.when, pos_BxM, 1)))
    return _State(x, when, state.calls + 1)


def _cached_logits(model, params, x, mask, kv, start, options: _Options):
    """Logits of the block from a partial forward pass against the cache (facts 6b)."""
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
    return guided_logits(model, params, window, jnp.zeros_like(window, bool), options.cfg_scale, options.mask_id,
                         key_mask, kv_cache=kv, positions=positions, output_positions=out_pos)


def _run_block(model, params, state: _State, mask, prompt_index, rng, start, blk, options: _Options) -> _State:
    """All steps of one block."""
    b = state.x.shape[0]
    s = options.steps_per_block
    pos = _candidate_positions(b, start, options)

    def open_masks(x):  # masks of the block plus any holes left in the prompt
        return jnp.take_along_axis(x, pos, axis=1) == options.mask_id

    schedule = num_transfer_tokens(jnp.sum(open_masks(state.x), axis=1), s)
    rngs = jax.random.split(jax.random.fold_in(rng, blk), s)
    kw = dict(return_kv=options.cache is not None)

    def full_logits(x):
        return guided_logits(model, params, x, prompt_index, options.cfg_scale, options.mask_id, mask,
                             output_positions=pos, **kw)

    def k_at(i):  # threshold: at least the schedule, at least one
        return schedule[:, i] if options.threshold is None else jnp.maximum(schedule[:, i], 1)

    # First step: a full pass (it also fills the cache when there is one).
    out = full_logits(state.x)
    logits, kv = out if options.cache else (out, None)
    state = _transfer(state, logits, pos, k_at(0), rngs[0], options)

    def later_step(state, i):
        if options.cache is None:
            logits = full_logits(state.x)
        else:
            logits = _cached_logits(model, params, state.x, mask, kv, start, options)
        return _transfer(state, logits, pos, k_at(i), rngs[i], options)

    if options.threshold is None:
        state, _ = jax.lax.scan(lambda state, i: (later_step(state, i), None), state, jnp.arange(1, s))
        return state

    def block_open(c):  # stop as soon as the block (and any hole) is filled
        state, i = c
        return (i < s) & jnp.any(open_masks(state.x))

    state, _ = jax.lax.while_loop(block_open, lambda c: (later_step(*c), c[1] + 1), (state, jnp.int32(1)))
    return state


@functools.partial(jax.jit, static_argnames=("model", "options"))
def _reverse_process(model, params, x, attention_mask, rng, options: _Options) -> _State:
    b, l = x.shape
    prompt_index = x != options.mask_id
    mask = jnp.ones((b, l), bool) if attention_mask is None else attention_mask
    state = _State(x, jnp.full((b, l), -1, jnp.int32), jnp.int32(0))

    def body(blk, state):
        start = options.prompt_len + blk * options.block_length
        if options.eos_early_stop is None:
            return _run_block(model, params, state, mask, prompt_index, rng, start, blk, options)
        # A block in which every row is finished (no mask left) makes no model call.
        block = jax.lax.dynamic_slice_in_dim(state.x, start, options.block_length, axis=1)
        state = jax.lax.cond(jnp.any(block == options.mask_id),
                             lambda state: _run_block(model, params, state, mask, prompt_index, rng, start, blk,
                                                      options),
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


def generate(model, params, prompt, *, attention_mask=None, steps=128, gen_length=128, block_length=128,
             temperature=0.0, cfg_scale=0.0, remasking="low_confidence", mask_id=None,
             logits_eos_inf=False, confidence_eos_eot_inf=False, eos_id=None, eot_id=None,
             threshold=None, rng=None, return_stats=False, cache=None, eos_early_stop=None, **block_options):
    """Sample answers for `prompt` (B, P) int ids; returns int32 (B, P + gen_length).

    A block-causal model (`model.config.block_size` > 0) samples with its exact block KV
    cache instead (`llada_jax.sampling.block_cache.generate`: LLaDA 2.x's rules, `steps`
    per block, `block_length` the model's block size, also `top_k`, `top_p`, `minimal_topk`).

    Semantics are those of the reference `generate` (facts section 6). Left-pad prompts of
    different lengths with EOS and pass `attention_mask` (B, P) with 0 on padding.
    Mask tokens inside the prompt are infilled by the same process (they compete with the
    current block for each step's reveals, as in the reference).
    threshold: Fast-dLLM's rule; each step reveals every masked position of the block whose
    confidence exceeds it, and at least as many as the fixed schedule (at least one), so
    `steps` bounds the number of model calls and a finished block ends early.
    cache: Fast-dLLM's approximate block-wise KV cache (facts section 6b): "prefix" reruns
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
    """
    if getattr(getattr(model, "config", None), "block_size", 0):
        from llada_jax.sampling import block_cache

        return block_cache.generate(model, params, prompt, attention_mask=attention_mask, steps=steps,
                                    gen_length=gen_length, block_length=block_length, temperature=temperature,
                                    remasking=remasking, threshold=threshold, mask_id=mask_id, eos_id=eos_id, rng=rng,
                                    return_stats=return_stats, cache=cache, cfg_scale=cfg_scale,
                                    eos_early_stop=bool(eos_early_stop), **block_options)
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
    options = _Options(prompt_len=p, gen_length=gen_length, block_length=block_length if gen_length else 0,
                       steps_per_block=steps // max(1, gen_length // max(1, block_length)),
                       temperature=float(temperature),
                       cfg_scale=float(cfg_scale), remasking=remasking, mask_id=int(mask_id),
                       logits_eos_inf=bool(logits_eos_inf), confidence_eos_eot_inf=bool(confidence_eos_eot_inf),
                       eos_id=int(eos_id), eot_id=int(eot_id),
                       threshold=None if threshold is None else float(threshold),
                       infill=bool((prompt == mask_id).any()), cache=cache, eos_early_stop=eos_early_stop)
    x = np.full((b, p + gen_length), mask_id, np.int32)
    x[:, :p] = prompt
    mask = None
    if attention_mask is not None:
        mask = np.concatenate([attention_mask.astype(bool), np.ones((b, gen_length), bool)], axis=1)
    state = _reverse_process(model, params, jnp.asarray(x), mask, rng, options)
    if return_stats:
        return state.x, {"model_calls": int(state.calls), "reveal_step": np.asarray(state.when)}
    return state.x
