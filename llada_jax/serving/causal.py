"""The engine's lane for block-causal models (block diffusion, `model.config.block_size` > 0).

Each slot holds one request on its own block grid, aligned to absolute positions from 0
as in `llada_jax.sampling.block_cache` (canvas index = position: `[prompt | masks up to
the grid's end | padding]`), and its own exact KV cache of the committed blocks. A request
joins at a block boundary: its prompt's whole blocks are encoded once (`prefill_rows`,
only for the rows that joined). Every engine step denoises the current block of every
occupied slot against that slot's cache and commits it (`run_block`: block_cache's
`denoise_block`, the one implementation of the step), each row at its own block, with its
own options and random stream (`jax.random.key(seed)`), so a request's tokens are the same
alone or among others, and at temperature 0 those of `block_cache.generate`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from llada_jax.model.transformer import KVCache
from llada_jax.sampling import block_cache, params as sampling_params, reveal
from llada_jax.sampling.params import SamplingParams

REMASKING = block_cache.REMASKING
RANDOM = sampling_params.REMASKING.index("random")  # reveal.Rows.remasking indexes the sampler's rules
BLANK = SamplingParams(gen_length=1)  # a free slot's values (its steps are 0)


def step_options(mask_id: int, block_length: int) -> block_cache.StepOptions:
    """The engine's static options: noise and filtering on (per-row values pick them)."""
    return block_cache.StepOptions(block_length, mask_id, noise=True, filter=True)


def rows_of(params_list) -> block_cache.Rows:
    """block_cache.Rows (numpy) of a list of SamplingParams, one per row: the bidirectional
    engine's per-row values (`reveal.rows_of`) in block_cache's fields."""
    r = reveal.rows_of(params_list)
    return block_cache.Rows(r.temperature, r.top_k, r.top_p, r.threshold, r.remasking == RANDOM)


@functools.partial(jax.jit, static_argnames=("model",))
def prefill_rows(model, params, x, valid, kv: KVCache, committed, prompt_blocks_end, joining):
    """The KV cache of the joining rows' whole prompt blocks (positions < prompt_blocks_end);
    the other rows keep theirs."""
    fresh = block_cache.prefill(functools.partial(model.apply, {"params": params}), x, valid)
    j = joining[None, :, None, None, None]
    kv = KVCache(*(jnp.where(j, f.astype(k.dtype), k) for k, f in zip(kv, fresh)))
    pre = valid & (jnp.arange(x.shape[1])[None, :] < prompt_blocks_end[:, None])
    return kv, jnp.where(joining[:, None], pre, committed)


@functools.partial(jax.jit, static_argnames=("model", "so"))
def run_block(model, params, c: block_cache.Cache, start, block, steps, rows: block_cache.Rows, seed,
              so: block_cache.StepOptions):
    """Every row's block at `start` denoised and committed (steps 0: left as it is).
    Returns (cache, reveal_step (B, block_length), model calls)."""
    keys = jax.vmap(jax.random.key)(seed)
    done = jnp.zeros(start.shape, bool)
    c, _, when, calls = block_cache.denoise_block(functools.partial(model.apply, {"params": params}), c, start, block,
                                                  steps, done, rows, keys, so)
    return c, when, calls


def check_engine(cfg, block_width: int, guidance: bool, cache):
    """ValueError for an engine option a block-causal model cannot take."""
    if getattr(cfg, "logit_alignment", "same") != "same":
        raise ValueError(f"engine: model.config.logit_alignment={cfg.logit_alignment!r}: expected 'same' for a "
                         "block-causal model (a shifted logit reads the position before, outside the block)")
    if block_width != cfg.block_size:
        raise ValueError(f"engine: block_width={block_width}: expected the model's block size {cfg.block_size}")
    if guidance or cache is not None:
        raise ValueError(f"engine: guidance={guidance}, cache={cache!r}: expected False and None for a block-causal "
                         "model (its exact block KV cache is always on)")


def check_request(params, block_size: int):
    """ValueError (naming the field) for a request a block-causal model cannot run."""
    if params.block_length != block_size:
        raise ValueError(f"block_length={params.block_length}: expected the model's block size {block_size}")
    if params.remasking not in REMASKING:
        raise ValueError(f"remasking={params.remasking!r}: expected one of {REMASKING} for a block-causal model")


def compilations() -> int:
    """Programs compiled so far for block-causal lanes (prefill and block step)."""
    return prefill_rows._cache_size() + run_block._cache_size()


def grid_end(prompt_len: int, gen_length: int, block_length: int) -> int:
    """The end of a request's block grid: ceil((P + gen_length) / B) * B positions."""
    return -(-(prompt_len + gen_length) // block_length) * block_length


class CausalLane:
    """The slots of one canvas length for a block-causal model: host copies of the tokens
    and each row's place on its grid; the KV cache and committed mask stay on device."""

    def __init__(self, model, slots: int, length: int):
        cfg = model.config
        self.length, self.eos_id, self.mask_id, self.bl = length, cfg.eos_token_id, cfg.mask_token_id, cfg.block_size
        self.so = step_options(self.mask_id, self.bl)
        self.requests = [None] * slots
        self.x = np.full((slots, length), self.eos_id, np.int32)
        self.valid = np.ones((slots, length), bool)  # a free row: EOS everywhere, valid (no empty softmax)
        self.block = np.zeros(slots, np.int32)  # the row's current block on its grid
        self.answer = np.zeros((slots, 2), np.int32)  # [P, P + gen_length)
        self.joining = np.zeros(slots, bool)
        self.kv = block_cache.empty_kv(cfg, slots, length)
        self.committed = jnp.zeros((slots, length), bool)

    def free(self, i):
        self.requests[i] = None
        self.x[i], self.valid[i], self.joining[i] = self.eos_id, True, False

    def place(self, i, req, mask_id: int, width: int):
        p, g = len(req.prompt), req.params.gen_length
        end = grid_end(p, g, self.bl)
        self.requests[i] = req
        self.x[i] = self.eos_id
        self.x[i, :p] = req.prompt
        self.x[i, p:end] = mask_id
        self.valid[i] = False
        self.valid[i, :end] = True
        self.block[i], self.answer[i], self.joining[i] = p // self.bl, (p, p + g), True

    def advance(self, i) -> bool:
        """Move row i past its block; whether that was its last."""
        self.block[i] += 1
        return self.block[i] * self.bl >= self.answer[i, 1]

    def run(self, model, params):
        """One block of every occupied row: (x, reveal_step (B, L), calls, lo, hi), the row's
        answer tokens of this block being x[i, lo[i]:hi[i]]."""
        active = np.asarray([r is not None for r in self.requests])
        plist = [r.params if r is not None else BLANK for r in self.requests]
        if self.joining.any():  # a new array: the dispatched call may still read the old one
            joining, self.joining = self.joining, np.zeros_like(self.joining)
            self.kv, self.committed = prefill_rows(model, params, self.x, self.valid, self.kv, self.committed,
                                                   (self.answer[:, 0] // self.bl * self.bl).astype(np.int32), joining)
        start = np.where(active, self.block * self.bl, 0).astype(np.int32)
        steps = np.where(active, [min(p.steps, p.gen_length) for p in plist], 0).astype(np.int32)
        c = block_cache.Cache(self.x, self.valid, self.kv, self.committed)
        seeds = np.asarray([p.seed for p in plist], np.uint32)
        c, when, calls = run_block(model, params, c, start, self.block.copy(), steps, rows_of(plist), seeds, self.so)
        self.kv, self.committed = c.kv, c.committed
        x = self.x = np.array(c.x)
        full, when = np.full(x.shape, -1, np.int32), np.asarray(when)
        for i in np.flatnonzero(active):
            full[i, start[i]:start[i] + self.bl] = when[i]
        lo = np.maximum(start, self.answer[:, 0])
        hi = np.minimum(start + self.bl, self.answer[:, 1])
        return x, full, int(calls), lo, hi

    def warm_up(self, model, params):
        """Compile the prefill and the block program (all slots free)."""
        self.joining[:] = True
        self.run(model, params)
