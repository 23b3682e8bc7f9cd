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
fixed schedule's count of them (`num_transfer_tokens(B, steps)`), else that count by
confidence; the block ends when it has no mask left. The finished block is then
committed into the cache in one pass. A block-causal model's committed blocks never see
later ones, so their keys and values are final: the tokens equal a recompute of the
whole prefix at every step (`recompute=True` runs that reference).

EOS (per row, as LLaDA 2.x): a row whose answer holds an EOS after a block is finished
(no further block for it; when every row is, none at all); with `eos_early_stop` a row
is finished inside a step as soon as its first answer EOS has no mask before it. The
output is (B, P + gen_length) with every position after a row's first answer EOS set to
EOS (LLaDA 2.x returns the answer up to that EOS).

Batches: left-pad prompts and pass `attention_mask`; the grid is the same for every row
(index positions, padding excluded as keys), as in LLaDA's sampler.
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


def num_transfer_tokens(block_length: int, steps: int):
    """LLaDA 2.x's fixed schedule: block_length // steps per step, one more in the first
    block_length % steps steps. (steps,) int32."""
    base = np.full((steps,), block_length // steps, np.int32)
    base[:block_length % steps] += 1
    return jnp.asarray(base)


def sample_tokens(logits_BxMxV, rng, o: BlockOptions):
    """(x0, its probability) as LLaDA 2.x samples: greedy at temperature 0, else the
    tempered, top-k then top-p filtered distribution."""
    logits = logits_BxMxV.astype(jnp.float32)
    if o.temperature == 0:
        from llada_jax.sampling.sampler import first_argmax

        x0 = first_argmax(logits)
    else:
        logits = logits / o.temperature
        if o.top_k:
            kth = jax.lax.top_k(logits, o.top_k)[0][..., -1:]
            logits = jnp.where(logits < kth, _NEG_INF, logits)
        if o.top_p < 1.0:  # keep the smallest prefix of the sorted tokens whose mass reaches top_p
            sorted_l = -jnp.sort(-logits, axis=-1)
            cum = jnp.cumsum(jax.nn.softmax(sorted_l, axis=-1), axis=-1)
            drop = jnp.concatenate([jnp.zeros_like(cum[..., :1], bool), cum[..., :-1] > o.top_p], axis=-1)
            smallest_kept = jnp.min(jnp.where(drop, jnp.inf, sorted_l), axis=-1, keepdims=True)
            logits = jnp.where(logits < smallest_kept, _NEG_INF, logits)
        x0 = jax.random.categorical(rng, logits, axis=-1).astype(jnp.int32)
    picked = jnp.take_along_axis(logits, x0[..., None], axis=-1)[..., 0]
    return x0, jnp.exp(picked - jax.nn.logsumexp(logits, axis=-1))


def transfer(window_BxK, logits_BxKxV, rng, k_step, live_B, o: BlockOptions):
    """One step's reveal in the block: (new window, revealed positions)."""
    active = (window_BxK == o.mask_id) & live_B[:, None]
    x_rng, r_rng = jax.random.split(rng)
    x0, p = sample_tokens(logits_BxKxV, x_rng, o)
    conf = p if o.remasking == "low_confidence" else jax.random.uniform(r_rng, p.shape)
    conf = jnp.where(active, conf, _NEG_INF)
    k = jnp.minimum(k_step, jnp.sum(active, axis=1))
    rank = jnp.argsort(jnp.argsort(-conf, axis=-1, stable=True), axis=-1)
    select = rank < k[:, None]
    if o.threshold is not None:
        high = conf > o.threshold
        select = jnp.where((jnp.sum(high, axis=1) >= k)[:, None], high, select)
    select = select & active
    return jnp.where(select, x0, window_BxK), select


def answer_done(x_BxT, o: BlockOptions):
    """(B,) rows whose first answer EOS has no mask before it."""
    t = x_BxT.shape[1]
    answer = jnp.arange(t) >= o.prompt_len
    eos = (x_BxT == o.eos_id) & answer
    first = jnp.min(jnp.where(eos, jnp.arange(t), t), axis=1)
    masked_before = jnp.any((x_BxT == o.mask_id) & answer & (jnp.arange(t) < first[:, None]), axis=1)
    return (first < t) & ~masked_before


class _State(NamedTuple):
    x: jax.Array  # (B, T) tokens
    kv: KVCache  # (layers, B, T, K, D) committed keys/values (zeros elsewhere)
    committed: jax.Array  # (B, T) bool: valid keys of committed blocks
    done: jax.Array  # (B,) finished rows
    calls: jax.Array  # (num_blocks,) denoising model calls per block


@functools.partial(jax.jit, static_argnames=("model", "o"))
def _sample(model, params, x, valid, rng, o: BlockOptions) -> _State:
    b, t = x.shape
    bl, cfg = o.block_length, model.config
    apply = functools.partial(model.apply, {"params": params})
    n_pre = o.prefill_blocks * bl
    shape = (cfg.n_layers, b, t, cfg.n_kv_heads, cfg.head_dim)
    kv = KVCache(jnp.zeros(shape, jnp.dtype(cfg.dtype)), jnp.zeros(shape, jnp.dtype(cfg.dtype)))
    committed = jnp.zeros((b, t), bool)
    if n_pre and not o.recompute:  # prefill: the prompt's whole blocks, once (block-causal)
        _, pre = apply(x[:, :n_pre], valid[:, :n_pre], return_kv=True, output_positions=jnp.zeros((b, 1), jnp.int32))
        kv = KVCache(kv.k.at[:, :, :n_pre].set(pre.k.astype(kv.k.dtype)), kv.v.at[:, :, :n_pre].set(pre.v.astype(kv.v.dtype)))
        committed = committed.at[:, :n_pre].set(valid[:, :n_pre])
    schedule = num_transfer_tokens(bl, o.steps)
    state = _State(x, kv, committed, jnp.zeros((b,), bool), jnp.zeros((o.num_blocks,), jnp.int32))

    def block_pass(state, start, window, **kw):
        """The block's B queries against the committed cache (bidirectional over both)."""
        key_mask = jnp.concatenate([state.committed, jax.lax.dynamic_slice_in_dim(valid, start, bl, 1)], axis=1)
        positions = jnp.broadcast_to(start + jnp.arange(bl, dtype=jnp.int32), (b, bl))
        return apply(window, key_mask, kv_cache=state.kv, positions=positions,
                     attention_pattern=attention.BIDIRECTIONAL, **kw)

    def logits_of(state, start, window):
        if o.recompute:  # the reference: every earlier block again (later ones are unseen)
            x_now = jax.lax.dynamic_update_slice_in_dim(state.x, window, start, 1)
            return apply(x_now, valid, output_positions=jnp.broadcast_to(start + jnp.arange(bl), (b, bl)))
        return block_pass(state, start, window)

    def run_block(blk, state):
        start = blk * bl
        rngs = jax.random.split(jax.random.fold_in(rng, blk), o.steps)

        def step_open(c):
            window, i, done = c
            return (i < o.steps) & jnp.any((window == o.mask_id) & ~done[:, None])

        def step(c):
            window, i, done = c
            window, _ = transfer(window, logits_of(state, start, window), rngs[i], schedule[i], ~done, o)
            if o.eos_early_stop:
                done = done | answer_done(jax.lax.dynamic_update_slice_in_dim(state.x, window, start, 1), o)
            return window, i + 1, done

        window0 = jax.lax.dynamic_slice_in_dim(state.x, start, bl, 1)
        window, n, done = jax.lax.while_loop(step_open, step, (window0, jnp.int32(0), state.done))
        x = jax.lax.dynamic_update_slice_in_dim(state.x, window, start, 1)
        kv, committed = state.kv, state.committed
        if not o.recompute:  # commit: the final block's keys/values, one pass
            _, fresh = block_pass(state, start, window, return_kv=True, output_positions=jnp.zeros((b, 1), jnp.int32))
            kv = KVCache(*(jax.lax.dynamic_update_slice_in_dim(c, f.astype(c.dtype), start, 2)
                           for c, f in zip(state.kv, fresh)))
            committed = jax.lax.dynamic_update_slice_in_dim(committed, jax.lax.dynamic_slice_in_dim(valid, start, bl, 1),
                                                            start, 1)
        answer = (jnp.arange(t) >= o.prompt_len) & (jnp.arange(t) < start + bl)
        done = done | jnp.any((x == o.eos_id) & answer, axis=1)  # LLaDA 2.x: stop after a block with EOS
        return _State(x, kv, committed, done, state.calls.at[blk].set(n))

    def body(blk, state):
        return jax.lax.cond(jnp.all(state.done), lambda s: s, functools.partial(run_block, blk), state)

    state = jax.lax.fori_loop(o.prefill_blocks, o.num_blocks, body, state)
    # after a row's first answer EOS: EOS (LLaDA 2.x returns the answer up to it)
    eos = (state.x == o.eos_id) & (jnp.arange(t) >= o.prompt_len)
    after = jnp.cumsum(eos, axis=1) - eos > 0
    return state._replace(x=jnp.where(after, o.eos_id, state.x))


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
    state = _sample(model, params, jnp.asarray(x), jnp.asarray(valid), rng, o)
    out = state.x[:, :o.prompt_len + o.gen_length]
    if not return_stats:
        return out
    calls = np.asarray(state.calls)
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
    steps = min(validation.integer(where, "steps", steps, minimum=1), max(1, gen_length // minimal_topk))
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
