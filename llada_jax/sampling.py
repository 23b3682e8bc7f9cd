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

from llada_jax.diffusion import guided_logits

REMASKING = ("low_confidence", "random")
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


def predict(logits_BxMxV, rng, opt: _Options):
    """Candidate tokens x0 and their confidence for the given positions (facts section 6)."""
    if opt.logits_eos_inf:
        logits_BxMxV = logits_BxMxV.at[..., opt.eos_id].set(_NEG_INF)
    noise_rng, rand_rng = jax.random.split(rng)
    scores = logits_BxMxV.astype(jnp.float32)
    if opt.temperature > 0:  # Gumbel-max in float32: argmax(logits + T * g)
        scores = scores + opt.temperature * jax.random.gumbel(noise_rng, scores.shape, jnp.float32)
    x0 = jnp.argmax(scores, axis=-1).astype(jnp.int32)
    if opt.remasking == "random":
        return x0, jax.random.uniform(rand_rng, x0.shape, jnp.float32)
    conf_logits = logits_BxMxV
    if opt.confidence_eos_eot_inf:  # EOS/EoT get zero confidence, the rest renormalised
        conf_logits = conf_logits.at[..., opt.eos_id].set(_NEG_INF).at[..., opt.eot_id].set(_NEG_INF)
    logp = jax.nn.log_softmax(conf_logits.astype(jnp.float32), axis=-1)
    return x0, jnp.exp(jnp.take_along_axis(logp, x0[..., None], axis=-1)[..., 0])


def _candidate_positions(b, block_start, opt: _Options):
    """(B, M) positions whose logits a step needs: the block, and the prompt if infilling."""
    pos = block_start + jnp.arange(opt.block_length, dtype=jnp.int32)
    if opt.infill:
        pos = jnp.concatenate([jnp.arange(opt.prompt_len, dtype=jnp.int32), pos])
    return jnp.broadcast_to(pos, (b, pos.shape[0]))


def _step(model, params, x, attention_mask, prompt_index, pos_BxM, k_B, rng, opt: _Options):
    """One reverse step on the candidate positions; returns the new x."""
    logits = guided_logits(model, params, x, prompt_index, opt.cfg_scale, opt.mask_id, attention_mask,
                           output_positions=pos_BxM)
    x0, x0_p = predict(logits, rng, opt)
    x_sub = jnp.take_along_axis(x, pos_BxM, axis=1)
    confidence = jnp.where(x_sub == opt.mask_id, x0_p, _NEG_INF)
    select = select_transfer(confidence, k_B, opt.threshold)
    rows = jnp.arange(x.shape[0])[:, None]
    return x.at[rows, pos_BxM].set(jnp.where(select, x0, x_sub))


@functools.partial(jax.jit, static_argnames=("model", "opt"))
def _reverse_process(model, params, x, attention_mask, rng, opt: _Options):
    b = x.shape[0]
    prompt_index = x != opt.mask_id
    s = opt.steps_per_block

    def block_body(blk, carry):
        x, calls = carry
        start = opt.prompt_len + blk * opt.block_length
        pos = _candidate_positions(b, start, opt)
        # masks of the block plus any holes left in the prompt
        schedule = num_transfer_tokens(jnp.sum(jnp.take_along_axis(x, pos, axis=1) == opt.mask_id, axis=1), s)

        def step_rng(i):
            return jax.random.fold_in(rng, blk * s + i)

        if opt.threshold is None:
            def scan_body(x, i):
                return _step(model, params, x, attention_mask, prompt_index, pos, schedule[:, i],
                             step_rng(i), opt), None
            x, _ = jax.lax.scan(scan_body, x, jnp.arange(s))
            return x, calls + s

        # Threshold rule: reveal all above the threshold and at least the scheduled
        # count (at least one), so `steps` bounds the calls; stop when the block is done.
        def cond(c):
            x, i = c
            return (i < s) & jnp.any(jnp.take_along_axis(x, pos, axis=1) == opt.mask_id)

        def body(c):
            x, i = c
            k = jnp.maximum(schedule[:, i], 1)
            return _step(model, params, x, attention_mask, prompt_index, pos, k, step_rng(i), opt), i + 1

        x, used = jax.lax.while_loop(cond, body, (x, jnp.int32(0)))
        return x, calls + used

    return jax.lax.fori_loop(0, opt.num_blocks, block_body, (x, jnp.int32(0)))


def _validate(model, prompt, attention_mask, steps, gen_length, block_length, temperature, remasking,
              mask_id, threshold, cfg_scale):
    def bad(name, value, expected):
        raise ValueError(f"generate: {name}={value!r}, expected {expected}")

    if prompt.ndim != 2 or prompt.shape[1] == 0:
        bad("prompt.shape", prompt.shape, "(batch, prompt_len) with prompt_len >= 1")
    holes = int((prompt == mask_id).sum(axis=1).max()) if prompt.size else 0
    if not isinstance(gen_length, int) or gen_length < 0 or (gen_length == 0 and holes == 0):
        bad("gen_length", gen_length, "a positive int (0 only to infill masks inside the prompt)")
    num_blocks = 1
    if gen_length:
        if not isinstance(block_length, int) or block_length <= 0 or gen_length % block_length:
            bad("block_length", block_length, f"a positive divisor of gen_length={gen_length}")
        num_blocks = gen_length // block_length
    if not isinstance(steps, int) or steps <= 0 or steps % num_blocks:
        bad("steps", steps, f"a positive multiple of the number of blocks ({num_blocks})")
    if steps > gen_length + holes:
        bad("steps", steps, f"<= gen_length + masks in the prompt ({gen_length + holes})")
    if remasking not in REMASKING:
        bad("remasking", remasking, f"one of {REMASKING}")
    if temperature < 0:
        bad("temperature", temperature, ">= 0")
    if cfg_scale < 0:
        bad("cfg_scale", cfg_scale, ">= 0")
    if threshold is not None and not 0 < threshold <= 1:
        bad("threshold", threshold, "None or in (0, 1]")
    if attention_mask is not None and attention_mask.shape != prompt.shape:
        bad("attention_mask.shape", attention_mask.shape, f"the prompt's shape {prompt.shape}")
    config = getattr(model, "config", None)
    if config is not None:
        vocab = config.embedding_size
        if not 0 <= mask_id < vocab:
            bad("mask_id", mask_id, f"a token id in [0, {vocab})")
        if prompt.shape[1] + gen_length > config.max_sequence_length:
            bad("prompt_len + gen_length", prompt.shape[1] + gen_length,
                f"<= max_sequence_length={config.max_sequence_length}")
        if prompt.size and (prompt.min() < 0 or prompt.max() >= vocab):
            bad("prompt token", int(prompt.max() if prompt.max() >= vocab else prompt.min()),
                f"ids in [0, {vocab})")


def generate(model, params, prompt, *, attention_mask=None, steps=128, gen_length=128, block_length=128,
             temperature=0.0, cfg_scale=0.0, remasking="low_confidence", mask_id=126336,
             logits_eos_inf=False, confidence_eos_eot_inf=False, eos_id=126081, eot_id=126348,
             threshold=None, rng=None, return_stats=False):
    """Sample answers for `prompt` (B, P) int ids; returns int32 (B, P + gen_length).

    Semantics are those of the reference `generate` (facts section 6). Left-pad prompts of
    different lengths with EOS and pass `attention_mask` (B, P) with 0 on padding.
    Mask tokens inside the prompt are infilled by the same process (they compete with the
    current block for each step's reveals, as in the reference).
    threshold: Fast-dLLM's rule; each step reveals every masked position of the block whose
    confidence exceeds it, and at least as many as the fixed schedule (at least one), so
    `steps` bounds the number of model calls and a finished block ends early.
    return_stats: also return {"model_calls": int}; a guided (cfg) call counts once.
    """
    prompt = np.asarray(prompt)
    if attention_mask is not None:
        attention_mask = np.asarray(attention_mask)
    _validate(model, prompt, attention_mask, steps, gen_length, block_length, temperature, remasking,
              mask_id, threshold, cfg_scale)
    b, p = prompt.shape
    opt = _Options(prompt_len=p, gen_length=gen_length, block_length=block_length if gen_length else 0,
                   steps_per_block=steps // max(1, gen_length // max(1, block_length)),
                   temperature=float(temperature),
                   cfg_scale=float(cfg_scale), remasking=remasking, mask_id=int(mask_id),
                   logits_eos_inf=bool(logits_eos_inf), confidence_eos_eot_inf=bool(confidence_eos_eot_inf),
                   eos_id=int(eos_id), eot_id=int(eot_id),
                   threshold=None if threshold is None else float(threshold),
                   infill=bool((prompt == mask_id).any()))
    x = np.full((b, p + gen_length), mask_id, np.int32)
    x[:, :p] = prompt
    mask = None
    if attention_mask is not None:
        mask = np.concatenate([attention_mask.astype(bool), np.ones((b, gen_length), bool)], axis=1)
    rng = jax.random.key(0) if rng is None else rng
    tokens, calls = _reverse_process(model, params, jnp.asarray(x), mask, rng, opt)
    if return_stats:
        return tokens, {"model_calls": int(calls)}
    return tokens
