"""Sampling a block-causal model (block diffusion: `model.config.block_size` > 0) with an
exact KV cache, following LLaDA 2.x's `generate` (ZHZisZZ/dllm
`dllm/pipelines/llada2/models/modeling_llada2_moe.py`).

The block grid is aligned to absolute positions from 0: prompt and answer share it,
num_blocks = ceil((P + gen_length) / B); the blocks wholly inside the prompt are encoded
once (prefill) into a KV cache. Each later block is denoised for up to `steps` steps
(steps per block, LLaDA 2.x's meaning; capped at gen_length // minimal_topk): each step
runs the model on the block's B tokens only, against the cache of the committed blocks,
samples x0 and its probability at the masked positions (temperature, top-k, top-p), and
reveals every position whose confidence exceeds `threshold` when there are at least the
fixed schedule's count of them (`_scheduled`: B // steps, one more in the first B % steps
steps), else that count by confidence; the block ends when it has no mask left. The
finished block is then committed into the cache in one pass. A block-causal model's committed blocks never see
later ones, so their keys and values are final: the tokens equal a recompute of the
whole prefix at every step (`recompute=True` runs that reference).

EOS (per row, as LLaDA 2.x): a row whose answer holds an EOS after a block is finished
(no further block for it; when every row is, none at all); with `eos_early_stop` a row
is finished inside a step as soon as its first answer EOS has no mask before it. The
output is (B, P + gen_length) with every position after a row's first answer EOS set to
EOS (LLaDA 2.x returns the answer up to that EOS). Only answer EOS count: the published
early stop looks for the first EOS of the whole sequence, so a prompt holding EOS makes it
return an empty answer as soon as an EOS is revealed (we do not copy that). tests/llada2_test.py
compares the tokens with the published `generate` on an imported LLaDA 2.x checkpoint.

Batches: left-pad prompts and pass `attention_mask`; the grid is the same for every row
(index positions, padding excluded as keys), as in LLaDA's sampler. Each row draws from its
own key (split from `rng`). The block step on per-row state (`denoise_block`: each row at
its own block, with its own options) is also the serving engine's (`llada_jax.serving.causal`).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from llada_jax import validation
from llada_jax.model import attention, flops
from llada_jax.model.transformer import KVCache
from llada_jax.sampling.confidence import first_argmax

REMASKING = ("low_confidence", "random")
_NEG_INF = -jnp.inf


class BlockOptions(NamedTuple):
    """Static options of one compiled block-cache sampler."""

    prompt_len: int
    gen_length: int
    block_length: int
    steps: int  # per block
    temperature: float
    top_k: int  # 0: off
    top_p: float  # 1.0: off
    remasking: str
    threshold: float | None
    mask_id: int
    eos_id: int
    eos_early_stop: bool
    recompute: bool  # the reference: recompute the whole prefix at every step (no cache)

    @property
    def num_blocks(self):
        return math.ceil((self.prompt_len + self.gen_length) / self.block_length)

    @property
    def prefill_blocks(self):
        return self.prompt_len // self.block_length

    @property
    def step(self) -> "StepOptions":
        return StepOptions(self.block_length, self.mask_id, self.temperature > 0,
                           bool(self.top_k) or self.top_p < 1.0, self.recompute)

    def rows(self, b: int) -> "Rows":
        threshold = jnp.inf if self.threshold is None else self.threshold
        return Rows(*(jnp.full((b,), v, t) for v, t in ((self.temperature, jnp.float32), (self.top_k, jnp.int32),
                      (self.top_p, jnp.float32), (threshold, jnp.float32), (self.remasking == "random", bool))))


class StepOptions(NamedTuple):
    """Static options of the block step shared by `generate` and the serving engine."""

    block_length: int
    mask_id: int
    noise: bool  # some row samples (temperature > 0); False: every row is greedy
    filter: bool  # some row may filter its draw (top-k / top-p)
    recompute: bool = False


class Rows(NamedTuple):
    """Per-row option values of LLaDA 2.x's step, traced (B,) arrays."""

    temperature: jax.Array  # float32; 0: greedy
    top_k: jax.Array  # int32; 0: off
    top_p: jax.Array  # float32; 1: off
    threshold: jax.Array  # float32; +inf: off
    random: jax.Array  # bool: remasking "random" (else "low_confidence")


def _scheduled(block_length: int, steps_B, i):
    """(B,) LLaDA 2.x's fixed schedule at step i of each row's `steps`: block_length // steps,
    one more in the first block_length % steps steps (0 after them)."""
    s = jnp.maximum(steps_B, 1)
    return jnp.where(i < steps_B, block_length // s + (i < block_length % s), 0).astype(jnp.int32)


def _filter(logits_BxWxV, rows: Rows):
    """Each row's top-k (0: off), then top-p (1: off) of what is left, as LLaDA 2.x filters."""
    v = logits_BxWxV.shape[-1]
    desc = -jnp.sort(-logits_BxWxV, axis=-1)
    k = jnp.clip(rows.top_k, 1, v)[:, None, None]
    kth = jnp.take_along_axis(desc, jnp.broadcast_to(k - 1, desc.shape[:2] + (1,)), -1)
    logits = jnp.where((rows.top_k[:, None, None] > 0) & (logits_BxWxV < kth), _NEG_INF, logits_BxWxV)
    # top-p: the smallest prefix of the sorted tokens whose mass reaches top_p
    sorted_l = -jnp.sort(-logits, axis=-1)
    cum = jnp.cumsum(jax.nn.softmax(sorted_l, axis=-1), axis=-1)
    drop = jnp.concatenate([jnp.zeros_like(cum[..., :1], bool), cum[..., :-1] > rows.top_p[:, None, None]], axis=-1)
    smallest_kept = jnp.min(jnp.where(drop, jnp.inf, sorted_l), axis=-1, keepdims=True)
    return jnp.where((rows.top_p[:, None, None] < 1.0) & (logits < smallest_kept), _NEG_INF, logits)


def sample_tokens(logits_BxWxV, keys_B, rows: Rows, so: StepOptions):
    """(x0, its probability) as LLaDA 2.x samples, row by row: greedy at temperature 0,
    else the tempered, top-k then top-p filtered distribution, drawn with the row's key."""
    logits = logits_BxWxV.astype(jnp.float32)
    x0 = first_argmax(logits)
    if so.noise:
        hot = rows.temperature > 0
        scaled = logits / jnp.where(hot, rows.temperature, 1.0)[:, None, None]
        if so.filter:  # sorting the vocabulary only when some row filters
            on = jnp.any(hot & ((rows.top_k > 0) | (rows.top_p < 1.0)))
            scaled = jax.lax.cond(on, _filter, lambda l, r: l, scaled, rows)
        logits = jnp.where(hot[:, None, None], scaled, logits)
        drawn = jax.vmap(lambda k, l: jax.random.categorical(k, l, axis=-1))(keys_B, logits).astype(jnp.int32)
        x0 = jnp.where(hot[:, None], drawn, x0)
    picked = jnp.take_along_axis(logits, x0[..., None], axis=-1)[..., 0]
    return x0, jnp.exp(picked - jax.nn.logsumexp(logits, axis=-1))


def transfer(window_BxW, logits_BxWxV, keys_B, k_B, live_B, rows: Rows, so: StepOptions):
    """One step's reveal in each row's block: (new window, revealed positions)."""
    active = (window_BxW == so.mask_id) & live_B[:, None]
    split = jax.vmap(jax.random.split)(keys_B)
    x0, p = sample_tokens(logits_BxWxV, split[:, 0], rows, so)
    uniform = jax.vmap(lambda k: jax.random.uniform(k, p.shape[1:]))(split[:, 1])
    conf = jnp.where(rows.random[:, None], uniform, p)
    conf = jnp.where(active, conf, _NEG_INF)
    k = jnp.minimum(k_B, jnp.sum(active, axis=1))
    rank = jnp.argsort(jnp.argsort(-conf, axis=-1, stable=True), axis=-1)
    select = rank < k[:, None]
    high = conf > rows.threshold[:, None]
    use_high = jnp.isfinite(rows.threshold) & (jnp.sum(high, axis=1) >= k)
    select = jnp.where(use_high[:, None], high, select) & active
    return jnp.where(select, x0, window_BxW), select


def answer_done(x_BxL, o: BlockOptions):
    """(B,) rows whose first answer EOS has no mask before it."""
    t = x_BxL.shape[1]
    answer = jnp.arange(t) >= o.prompt_len
    eos = (x_BxL == o.eos_id) & answer
    first = jnp.min(jnp.where(eos, jnp.arange(t), t), axis=1)
    masked_before = jnp.any((x_BxL == o.mask_id) & answer & (jnp.arange(t) < first[:, None]), axis=1)
    return (first < t) & ~masked_before


# ---- the block step on per-row state, shared with the serving engine (llada_jax.serving.causal)


class Cache(NamedTuple):
    """Per-row state of the block-causal reverse process over a canvas of T positions."""

    x: jax.Array  # (B, T) tokens (masks where not yet revealed)
    valid: jax.Array  # (B, T) bool: the row's own tokens (False on padding)
    kv: KVCache  # (layers, B, T, K, D) keys/values, read only where `committed`
    committed: jax.Array  # (B, T) bool: keys of committed blocks


def empty_kv(cfg, b: int, t: int) -> KVCache:
    shape = (cfg.n_layers, b, t, cfg.n_kv_heads, cfg.head_dim)
    return KVCache(jnp.zeros(shape, jnp.dtype(cfg.dtype)), jnp.zeros(shape, jnp.dtype(cfg.dtype)))


def prefill(apply, x_BxL, valid_BxL) -> KVCache:
    """Keys/values of N positions in one block-causal pass (whole prompt blocks: final)."""
    b = x_BxL.shape[0]
    return apply(x_BxL, valid_BxL, return_kv=True, output_positions=jnp.zeros((b, 1), jnp.int32))[1]


def _window(a_BxL, start_B, n: int):
    return jnp.take_along_axis(a_BxL, start_B[:, None] + jnp.arange(n, dtype=jnp.int32)[None, :], axis=1)


def _put(a_BxL, w_BxW, start_B, axis=0):
    return jax.vmap(lambda a, w, s: jax.lax.dynamic_update_slice_in_dim(a, w.astype(a.dtype), s, axis),
                    in_axes=(axis, axis, 0), out_axes=axis)(a_BxL, w_BxW, start_B)


def block_pass(apply, c: Cache, window_BxW, start_B, **kw):
    """The block's queries against the committed cache (bidirectional over both)."""
    bl = window_BxW.shape[1]
    key_mask = jnp.concatenate([c.committed, _window(c.valid, start_B, bl)], axis=1)
    positions = start_B[:, None] + jnp.arange(bl, dtype=jnp.int32)[None, :]
    return apply(window_BxW, key_mask, kv_cache=c.kv, positions=positions, attention_pattern=attention.BIDIRECTIONAL,
                 **kw)


def denoise_block(apply, c: Cache, start_B, block_B, steps_B, done_B, rows: Rows, keys_B, so: StepOptions,
                  early_stop=None):
    """Denoise each row's block at `start_B` (block index `block_B` on the grid) for up to
    `steps_B` steps (0: the row is left as it is) until it has no mask, then commit it into
    the cache in one pass. Row r's step i draws with fold_in(fold_in(keys_B[r], block), i).
    early_stop(x, done) -> done: finish rows inside a step. Returns (cache, done,
    reveal_step (B, block_length) int32 (-1: not revealed), model calls)."""
    bl = so.block_length
    b = c.x.shape[0]
    block_keys = jax.vmap(jax.random.fold_in)(keys_B, block_B)

    def logits_of(window):
        if so.recompute:  # the reference: every earlier block again (later ones are unseen)
            x_now = _put(c.x, window, start_B)
            return apply(x_now, c.valid, output_positions=start_B[:, None] + jnp.arange(bl)[None, :])
        return block_pass(apply, c, window, start_B)

    def step_open(carry):
        window, _, i, done = carry
        return jnp.any((i < steps_B) & ~done & jnp.any(window == so.mask_id, axis=1))

    def step(carry):
        window, when, i, done = carry
        keys = jax.vmap(lambda k: jax.random.fold_in(k, i))(block_keys)
        live = ~done & (i < steps_B)
        window, select = transfer(window, logits_of(window), keys, _scheduled(bl, steps_B, i), live, rows, so)
        if early_stop is not None:
            done = early_stop(_put(c.x, window, start_B), done)
        return window, jnp.where(select, i, when), i + 1, done

    window0 = _window(c.x, start_B, bl)
    init = (window0, jnp.full((b, bl), -1, jnp.int32), jnp.int32(0), done_B)
    window, when, n, done = jax.lax.while_loop(step_open, step, init)
    c = c._replace(x=_put(c.x, window, start_B))
    if not so.recompute:  # commit: the final block's keys/values, one pass
        fresh = block_pass(apply, c, window, start_B, return_kv=True, output_positions=jnp.zeros((b, 1), jnp.int32))[1]
        c = c._replace(kv=KVCache(*(_put(k, f, start_B, axis=1) for k, f in zip(c.kv, fresh))),
                       committed=_put(c.committed, _window(c.valid, start_B, bl), start_B))
    return c, done, when, n


@functools.partial(jax.jit, static_argnames=("model", "o"))
def _sample(model, params, x, valid, rng, o: BlockOptions):
    b, t = x.shape
    bl = o.block_length
    apply = functools.partial(model.apply, {"params": params})
    n_pre = o.prefill_blocks * bl
    c = Cache(x, valid, empty_kv(model.config, b, t), jnp.zeros((b, t), bool))
    if n_pre and not o.recompute:  # prefill: the prompt's whole blocks, once (block-causal)
        pre = prefill(apply, x[:, :n_pre], valid[:, :n_pre])
        c = c._replace(kv=KVCache(*(k.at[:, :, :n_pre].set(p.astype(k.dtype)) for k, p in zip(c.kv, pre))),
                       committed=c.committed.at[:, :n_pre].set(valid[:, :n_pre]))
    rows, keys = o.rows(b), jax.random.split(rng, b)
    steps = jnp.full((b,), o.steps, jnp.int32)
    early_stop = (lambda x, done: done | answer_done(x, o)) if o.eos_early_stop else None

    def run_block(blk, carry):
        c, done, calls = carry
        start = jnp.full((b,), blk * bl, jnp.int32)
        c, done, _, n = denoise_block(apply, c, start, jnp.full((b,), blk, jnp.int32), steps, done, rows, keys,
                                      o.step, early_stop)
        answer = (jnp.arange(t) >= o.prompt_len) & (jnp.arange(t) < (blk + 1) * bl)
        done = done | jnp.any((c.x == o.eos_id) & answer, axis=1)  # LLaDA 2.x: stop after a block with EOS
        return c, done, calls.at[blk].set(n)

    def body(blk, carry):
        return jax.lax.cond(jnp.all(carry[1]), lambda s: s, functools.partial(run_block, blk), carry)

    carry = (c, jnp.zeros((b,), bool), jnp.zeros((o.num_blocks,), jnp.int32))
    c, _, calls = jax.lax.fori_loop(o.prefill_blocks, o.num_blocks, body, carry)
    # after a row's first answer EOS: EOS (LLaDA 2.x returns the answer up to it)
    eos = (c.x == o.eos_id) & (jnp.arange(t) >= o.prompt_len)
    after = jnp.cumsum(eos, axis=1) - eos > 0
    return jnp.where(after, o.eos_id, c.x), calls


def sampler_flops(cfg, o: BlockOptions, calls_per_block) -> float:
    """Model FLOPs of one row's sampling: the prefill, each denoising pass (B queries over
    the committed keys plus the block) and each commit (no output head)."""
    bl, total = o.block_length, 0.0
    if o.prefill_blocks and not o.recompute:
        n = o.prefill_blocks * bl
        total += flops.forward_flops(cfg, n, n, outputs=1)
    for blk in range(o.prefill_blocks, o.num_blocks):
        keys = (blk + 1) * bl
        if o.recompute:
            total += int(calls_per_block[blk]) * flops.forward_flops(cfg, keys, keys, outputs=bl)
        elif calls_per_block[blk]:
            total += int(calls_per_block[blk]) * flops.forward_flops(cfg, bl, keys, outputs=bl)
            total += flops.forward_flops(cfg, bl, keys, outputs=1)
    return total


def generate(model, params, prompt, *, attention_mask=None, steps=32, gen_length=128, block_length=32,
             temperature=0.0, top_k=None, top_p=None, remasking="low_confidence", threshold=None,
             minimal_topk=1, eos_early_stop=False, mask_id=None, eos_id=None, rng=None, return_stats=False,
             recompute=False, cache=None, cfg_scale=0.0):
    """Sample (B, P + gen_length) int32 ids from a block-causal model (module docstring).

    steps: denoising steps per block (at most; a block ends when it has no mask left).
    threshold: None (the fixed schedule only) or in (0, 1]. top_k / top_p: None is off.
    eos_early_stop: also finish a row inside a step (see the module docstring).
    return_stats: also return {"model_calls", "calls_per_block", "flops"} (FLOPs per row).
    recompute: the exactness reference (no cache: the whole prefix at every step).
    Arguments are checked (ValueError naming the value) before anything compiles.
    """
    o, x, valid, rng = _validate(model, prompt, attention_mask, steps, gen_length, block_length, temperature, top_k,
                                 top_p, remasking, threshold, minimal_topk, eos_early_stop, mask_id, eos_id, rng,
                                 recompute, cache, cfg_scale)
    x, calls = _sample(model, params, jnp.asarray(x), jnp.asarray(valid), rng, o)
    out = x[:, :o.prompt_len + o.gen_length]
    if not return_stats:
        return out
    calls = np.asarray(calls)
    extra = int(o.prefill_blocks > 0 and not recompute) + (0 if recompute else int(np.sum(calls > 0)))
    return out, {"model_calls": int(calls.sum()) + extra, "calls_per_block": calls,
                 "flops": sampler_flops(model.config, o, calls)}


def _validate(model, prompt, attention_mask, steps, gen_length, block_length, temperature, top_k, top_p, remasking,
              threshold, minimal_topk, eos_early_stop, mask_id, eos_id, rng, recompute, cache, cfg_scale):
    where = "generate"
    cfg = model.config
    if not getattr(cfg, "block_size", 0):
        validation.bad(where, "model.config.block_size", getattr(cfg, "block_size", 0),
                       "> 0: the block-cache sampler needs a block-causal model (train or convert one with "
                       "data.kind='block_diffusion'); sample a full-diffusion model with LLaDA's sampler")
    if getattr(cfg, "logit_alignment", "same") != "same":
        validation.bad(where, "model.config.logit_alignment", cfg.logit_alignment,
                       "'same' for the block cache (a shifted logit reads the position before, outside the block)")
    if cache is not None:
        validation.bad(where, "cache", cache, "None for a block-causal model: its exact block KV cache is always "
                       "on; Fast-dLLM's approximate 'prefix'/'dual' caches are for bidirectional models")
    if cfg_scale:
        validation.bad(where, "cfg_scale", cfg_scale, "0 for a block-causal model")
    mask_id, eos_id, _ = validation.special_ids(model, mask_id, eos_id)
    vocab = validation.vocab_of(model)
    mask_id = validation.token_id(where, "mask_id", mask_id, vocab)
    eos_id = validation.token_id(where, "eos_id", eos_id, vocab)
    prompt = validation.token_ids(where, "prompt", prompt, vocab, ndim=2)
    if prompt.shape[1] == 0:
        validation.bad(where, "prompt.shape", prompt.shape, "(batch, prompt_len) with prompt_len >= 1")
    if (prompt == mask_id).any():
        validation.bad(where, "prompt", "with mask tokens", "no masks: a block-causal model does not infill")
    block_length = validation.integer(where, "block_length", block_length, minimum=1)
    if block_length != cfg.block_size:
        validation.bad(where, "block_length", block_length, f"the model's block size {cfg.block_size}")
    gen_length = validation.integer(where, "gen_length", gen_length, minimum=1)
    minimal_topk = validation.integer(where, "minimal_topk", minimal_topk, minimum=1)
    if gen_length // minimal_topk < 1:  # LLaDA 2.x's cap would leave 0 steps: an answer of masks
        validation.bad(where, "minimal_topk", minimal_topk, f"<= gen_length={gen_length} (steps are capped at "
                       f"gen_length // minimal_topk, as LLaDA 2.x's generate does; 0 steps reveal nothing)")
    steps = min(validation.integer(where, "steps", steps, minimum=1), gen_length // minimal_topk)
    top_k = 0 if top_k is None else validation.integer(where, "top_k", top_k, minimum=1)
    top_p = 1.0 if top_p is None else validation.number(where, "top_p", top_p)
    if not 0 < top_p <= 1:
        validation.bad(where, "top_p", top_p, "None or in (0, 1]")
    if remasking not in REMASKING:
        validation.bad(where, "remasking", remasking, f"one of {REMASKING} for a block-causal model")
    temperature = validation.number(where, "temperature", temperature, minimum=0)
    if threshold is not None:
        threshold = validation.number(where, "threshold", threshold)
        if not 0 < threshold <= 1:
            validation.bad(where, "threshold", threshold, "None or in (0, 1]")
    if eos_early_stop not in (None, False, True):
        validation.bad(where, "eos_early_stop", eos_early_stop, "a bool for a block-causal model")
    b, p = prompt.shape
    o = BlockOptions(p, gen_length, block_length, steps, float(temperature), top_k, float(top_p), remasking,
                     None if threshold is None else float(threshold), int(mask_id), int(eos_id), bool(eos_early_stop),
                     bool(recompute))
    t = o.num_blocks * block_length
    if t > cfg.max_sequence_length:
        validation.bad(where, "prompt_len + gen_length", p + gen_length,
                       f"a block grid of {t} tokens <= max_sequence_length={cfg.max_sequence_length}")
    valid = np.ones((b, t), bool)
    if attention_mask is not None:
        attention_mask = np.asarray(attention_mask)
        if attention_mask.shape != prompt.shape:
            validation.bad(where, "attention_mask.shape", attention_mask.shape, f"the prompt's shape {prompt.shape}")
        valid[:, :p] = attention_mask.astype(bool)
    x = np.full((b, t), mask_id, np.int32)
    x[:, :p] = prompt
    rng = jax.random.key(0) if rng is None else validation.rng_key(where, "rng", rng)
    return o, x, valid, rng
