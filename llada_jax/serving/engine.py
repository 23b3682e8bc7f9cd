"""The serving engine: continuous batching of masked-diffusion requests at block boundaries.

    engine = Engine(model, params, slots=8, buckets=(64, 128), block_width=32)
    [r] = engine.generate([prompt_ids], SamplingParams(gen_length=32, block_length=32))
    r.tokens, r.finish_reason                      # answer ids (cut at EOS / max_tokens)

The batch has a fixed number of slots per canvas length (`buckets`: each a compiled
program, so after `warm_up` nothing compiles). Every engine step runs one block of every
occupied slot (`llada_jax.serving.block.run_block`); between steps a finished request
leaves (its block holds EOS/EoT, it reached max_tokens or its last block, it was
cancelled or timed out) and a queued request takes its slot, so a long request never
holds the others. A request's row depends only on itself (its own canvas layout, option
values and random stream from its seed), so its tokens are the same whether it runs
alone or among any others. A block-causal model (block diffusion) gets lanes of
`llada_jax.serving.causal`: each slot on its own block grid with its own exact KV cache.

Drive it from one thread: `generate` (blocking, for lm-eval, RL and the CLI), or `start()`
a background thread and `submit` from any thread (the server). Callbacks run on the
engine's thread.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import threading
import time
from typing import Callable

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from llada_jax.sampling import reveal
from llada_jax.sampling.params import SamplingParams
from llada_jax.serving import block as block_lib
from llada_jax.serving import causal


class QueueFull(Exception):
    """The engine's queue holds `max_queue` requests: try again later."""


@dataclasses.dataclass(eq=False)
class Request:
    """One prompt's generation; `tokens` grows block by block (committed answer ids)."""

    prompt: list
    params: SamplingParams
    max_tokens: int
    deadline: float | None = None
    on_event: Callable | None = None  # on_event(request, kind, data): "block" (ids, reveals) / "done"
    id: int = 0
    tokens: list = dataclasses.field(default_factory=list)
    finish_reason: str | None = None  # stop (EOS), length, cancelled, timeout
    submitted: float = 0.0
    finished: float | None = None
    cancelled: bool = False
    done: threading.Event = dataclasses.field(default_factory=threading.Event)

    def cancel(self):
        """Free the slot at the next block boundary (or drop it from the queue)."""
        self.cancelled = True


class _Lane:
    """The slots of one canvas length: host copies of the block inputs and the requests."""

    def __init__(self, slots: int, length: int, eos_id: int):
        self.length, self.eos_id = length, eos_id
        self.requests: list[Request | None] = [None] * slots
        b = slots
        self.x = np.full((b, length), eos_id, np.int32)
        self.key_mask = np.ones((b, length), bool)
        self.positions = np.broadcast_to(np.arange(length, dtype=np.int32), (b, length)).copy()
        self.is_prompt = np.zeros((b, length), bool)
        self.answer_start = np.zeros(b, np.int32)
        self.block = np.zeros(b, np.int32)
        self.rows = [None] * b

    def free(self, i):
        self.requests[i] = None
        self.x[i], self.key_mask[i], self.is_prompt[i] = self.eos_id, True, False
        self.positions[i] = np.arange(self.length)

    def advance(self, i) -> bool:
        """Move row i past its block; whether that was its last."""
        self.block[i] += 1
        return self.block[i] >= self.requests[i].params.num_blocks

    def place(self, i, req: Request, mask_id: int, width: int):
        p, g, bl = len(req.prompt), req.params.gen_length, req.params.block_length
        end = self.length - (width - bl)  # the last block's window ends at the canvas end
        first = end - g - p
        self.requests[i] = req
        self.x[i] = self.eos_id
        self.x[i, first:first + p] = req.prompt
        self.x[i, first + p:end] = mask_id
        self.key_mask[i] = False
        self.key_mask[i, first:end] = True
        self.positions[i] = np.clip(np.arange(self.length) - first, 0, None)
        self.is_prompt[i] = False
        self.is_prompt[i, first:first + p] = True
        self.answer_start[i], self.block[i] = first + p, 0
        self.rows[i] = req.params


class Engine:
    """Continuous batching over `slots` rows per bucket (module docstring).

    buckets: canvas lengths (default: one, the model's max_sequence_length); a request
    goes to the shortest that holds prompt + answer + (block_width - block_length).
    block_width: the widest block a request may use (the static window; default 32, and
    for a block-causal model its block size, the only one it takes).
    guidance: carry cfg's unconditional copy (doubles the batch) so requests may set
    cfg_scale; cache: None or "dual" (Fast-dLLM's approximate dual cache).
    mesh: a 1-D `jax.sharding.Mesh` to split the slots over (data parallel: the params
    replicated on its devices, each device running slots / mesh.size rows of every block);
    None: one device. Rows are independent, so a request's tokens are those it gets on one
    device's engine of the same slots (a test compares them).
    """

    def __init__(self, model, params, *, slots: int = 8, buckets=None, block_width: int | None = None,
                 max_queue: int = 1024, guidance: bool = False, cache=None, eos_ids=None, eot_id=None,
                 logits_eos_inf: bool = False, confidence_eos_eot_inf: bool = False, mesh=None):
        cfg = model.config
        self.block_causal = bool(getattr(cfg, "block_size", 0))  # llada_jax.serving.causal's lanes
        if block_width is None:
            block_width = cfg.block_size if self.block_causal else 32
        if self.block_causal:
            causal.check_engine(cfg, block_width, guidance, cache)
        self.slots, self.width, self.max_queue = int(slots), int(block_width), int(max_queue)
        if self.slots < 1 or self.width < 1:
            raise ValueError(f"engine: slots={slots}, block_width={block_width}: expected positive integers")
        self.rows_sharding = None
        if mesh is not None:
            if len(mesh.axis_names) != 1 or self.slots % mesh.size or self.block_causal:
                raise ValueError(f"engine: mesh of shape {dict(mesh.shape)} for slots={slots}: expected a 1-D mesh "
                                 f"whose size divides the slots, and a bidirectional model")
            self.rows_sharding = NamedSharding(mesh, PartitionSpec(mesh.axis_names[0]))
            params = jax.device_put(params, NamedSharding(mesh, PartitionSpec()))
        self.model, self.params = model, params
        self.buckets = tuple(sorted(int(b) for b in (buckets or (cfg.max_sequence_length,))))
        if self.buckets[-1] > cfg.max_sequence_length or self.buckets[0] <= self.width:
            raise ValueError(f"engine: buckets={self.buckets}, expected lengths in ({self.width}, "
                             f"max_sequence_length={cfg.max_sequence_length}]")
        self.mask_id, self.eos_id = cfg.mask_token_id, cfg.eos_token_id
        self.eot_id = cfg.eos_token_id if eot_id is None else eot_id
        self.stop_ids = frozenset(eos_ids or {self.eos_id, self.eot_id})
        self.guidance, self.cache = bool(guidance), cache
        self.options = block_lib.window_options(self.width, self.mask_id, self.eos_id, self.eot_id, cache=cache,
                                                guidance=guidance, logits_eos_inf=logits_eos_inf,
                                                confidence_eos_eot_inf=confidence_eos_eot_inf)
        lane = (lambda b: causal.CausalLane(model, self.slots, b)) if self.block_causal else (
            lambda b: _Lane(self.slots, b, self.eos_id))
        self.lanes = {b: lane(b) for b in self.buckets}
        self.queue: collections.deque[Request] = collections.deque()
        self.lock = threading.Lock()
        self.wake = threading.Condition(self.lock)
        self.ids = itertools.count()
        self.output_tokens = 0
        self.model_calls = 0
        self.last_step_tokens_per_s = 0.0
        self._thread, self._stop = None, False

    # --- requests -------------------------------------------------------------------

    def check(self, prompt, params: SamplingParams, max_tokens: int | None = None) -> int:
        """ValueError (naming the field) for a request this engine cannot run; else its
        max_tokens (default: gen_length)."""
        if not isinstance(params, SamplingParams):
            raise ValueError(f"engine: params={params!r}, expected a SamplingParams")
        vocab = self.model.config.embedding_size
        if not len(prompt) or any(not 0 <= int(t) < vocab or int(t) == self.mask_id for t in prompt):
            raise ValueError(f"prompt: expected 1 or more token ids in [0, {vocab}) other than mask_id={self.mask_id}")
        g, bl = params.gen_length, params.block_length
        if g < 1:
            raise ValueError(f"gen_length={g}: expected >= 1 (the engine does not infill)")
        if bl > self.width:
            raise ValueError(f"block_length={bl}: expected <= the engine's block width {self.width}")
        if params.steps > g:
            raise ValueError(f"steps={params.steps}: expected <= gen_length ({g})")
        if params.cfg_scale > 0 and not self.guidance:
            raise ValueError(f"cfg_scale={params.cfg_scale}: this engine runs without guidance (start it with cfg)")
        if params.cache != self.cache:
            raise ValueError(f"cache={params.cache!r}: this engine runs with cache={self.cache!r}")
        if params.eos_early_stop is not None:
            raise ValueError("eos_early_stop: the engine always ends a request at the block holding its EOS")
        if self.block_causal:
            causal.check_request(params, self.width)
        if self._need(len(prompt), params) > self.buckets[-1]:
            raise ValueError(f"prompt: {len(prompt)} tokens + gen_length {g} need {self._need(len(prompt), params)} "
                             f"positions, more than the longest canvas {self.buckets[-1]}")
        max_tokens = g if max_tokens is None else int(max_tokens)
        if not 1 <= max_tokens <= g:
            raise ValueError(f"max_tokens={max_tokens}: expected in [1, gen_length={g}]")
        return max_tokens

    def submit(self, prompt, params: SamplingParams, *, max_tokens=None, timeout=None, on_event=None) -> Request:
        """Queue a request (checked first: ValueError); QueueFull when the queue is full."""
        max_tokens = self.check(prompt, params, max_tokens)
        now = time.monotonic()
        req = Request([int(t) for t in prompt], params, max_tokens, None if timeout is None else now + timeout,
                      on_event, submitted=now)
        with self.lock:
            if len(self.queue) >= self.max_queue:
                raise QueueFull(f"the queue holds {len(self.queue)} requests")
            req.id = next(self.ids)
            self.queue.append(req)
            self.wake.notify()
        return req

    def generate(self, prompts, params, *, max_tokens=None) -> list[Request]:
        """Run requests to completion in this thread (params: one SamplingParams or one per
        prompt) and return them in order; not while the background thread runs."""
        if self._thread is not None:
            raise RuntimeError("engine: generate() while the background thread runs; use submit()")
        plist = params if isinstance(params, (list, tuple)) else [params] * len(prompts)
        reqs = [self.check(p, q, max_tokens) and None for p, q in zip(prompts, plist)]  # all checked first
        saved, self.max_queue = self.max_queue, max(self.max_queue, len(prompts))
        try:
            reqs = [self.submit(p, q, max_tokens=max_tokens) for p, q in zip(prompts, plist)]
        finally:
            self.max_queue = saved
        while not all(r.done.is_set() for r in reqs):
            self.step()
        return reqs

    # --- the loop -------------------------------------------------------------------

    def queue_depth(self) -> int:
        return len(self.queue)

    def occupied(self) -> int:
        return sum(r is not None for lane in self.lanes.values() for r in lane.requests)

    def idle(self) -> bool:
        return not self.queue and not self.occupied()

    @staticmethod
    def compilations() -> int:
        """Programs compiled so far for the block step (any engine in this process)."""
        return block_lib.run_block._cache_size() + causal.compilations()

    def warm_up(self):
        """Compile every bucket's programs (one empty-slot call each)."""
        for lane in self.lanes.values():
            if self.block_causal:
                lane.warm_up(self.model, self.params)
            else:
                self._run(lane)

    def _need(self, prompt_len: int, params: SamplingParams) -> int:
        return positions_needed(prompt_len, params, self.width, self.block_causal)

    def _bucket(self, req: Request) -> int:
        need = self._need(len(req.prompt), req.params)
        return next(b for b in self.buckets if b >= need)

    def _finish(self, req: Request, reason: str):
        req.finish_reason, req.finished = reason, time.monotonic()
        req.done.set()
        if req.on_event is not None:
            req.on_event(req, "done", None)

    def _admit(self):
        now = time.monotonic()
        with self.lock:
            waiting, self.queue = self.queue, collections.deque()
            for req in waiting:
                if req.cancelled or (req.deadline is not None and now > req.deadline):
                    self._finish(req, "cancelled" if req.cancelled else "timeout")
                    continue
                lane = self.lanes[self._bucket(req)]
                free = [i for i, r in enumerate(lane.requests) if r is None]
                if free:
                    lane.place(free[0], req, self.mask_id, self.width)
                else:
                    self.queue.append(req)

    def _run(self, lane: _Lane):
        blank = SamplingParams(gen_length=1)
        plist = [r.params if r is not None else blank for r in lane.requests]
        active = np.asarray([r is not None for r in lane.requests])
        start = np.where(active, lane.answer_start + lane.block * np.asarray([p.block_length for p in plist]), 0)
        inp = block_lib.BlockInputs(
            lane.x, lane.key_mask, lane.positions, lane.is_prompt, start.astype(np.int32),
            np.where(active, [p.block_length for p in plist], 0).astype(np.int32),
            np.where(active, [p.steps_per_block for p in plist], 0).astype(np.int32),
            lane.block.copy(), np.asarray([p.seed for p in plist], np.uint32))
        rows = reveal.rows_of(plist)
        if self.rows_sharding is not None:  # every leaf is (slots, ...): rows split over the mesh
            inp, rows = jax.device_put((inp, rows), self.rows_sharding)
        x, when, calls = block_lib.run_block(self.model, self.params, inp, rows, self.options)
        lane.x = np.array(x)
        return lane.x, np.asarray(when), int(calls), start, start + np.asarray([p.block_length for p in plist])

    def step(self) -> bool:
        """One block for every occupied slot; returns whether any work was done."""
        self._admit()
        worked = False
        for lane in self.lanes.values():
            now = time.monotonic()
            for i, req in enumerate(lane.requests):  # cancelled / timed out since the last block
                if req is not None and (req.cancelled or (req.deadline is not None and now > req.deadline)):
                    lane.free(i)
                    self._finish(req, "cancelled" if req.cancelled else "timeout")
            if not any(r is not None for r in lane.requests):
                continue
            worked = True
            t = time.perf_counter()
            x, when, calls, lo, hi = lane.run(self.model, self.params) if self.block_causal else self._run(lane)
            self.model_calls += calls
            new_tokens = 0
            for i, req in enumerate(lane.requests):
                if req is None:
                    continue
                s, e = int(lo[i]), int(hi[i])
                ids = [int(v) for v in x[i, s:e]]
                reveals = [[int(j) for j in np.flatnonzero(when[i, s:e] == c)] for c in range(calls)]
                room = req.max_tokens - len(req.tokens)
                cut = next((j for j, v in enumerate(ids) if v in self.stop_ids), None)
                kept = ids[:min(room, len(ids) if cut is None else cut)]
                req.tokens.extend(kept)
                new_tokens += len(kept)
                last = lane.advance(i)
                if req.on_event is not None:
                    req.on_event(req, "block", (kept, [[j for j in r if j < len(kept)] for r in reveals if r]))
                if cut is not None or len(req.tokens) >= req.max_tokens or last:
                    lane.free(i)
                    self._finish(req, "stop" if cut is not None and cut < room else "length")
            self.output_tokens += new_tokens
            self.last_step_tokens_per_s = new_tokens / max(time.perf_counter() - t, 1e-9)
        self._admit()
        return worked

    # --- background thread (the server) --------------------------------------------

    def start(self):
        """Run `step` on a background thread until `stop`."""
        def loop():
            while not self._stop:
                if not self.step():
                    with self.lock:
                        if not self.queue and not self._stop:
                            self.wake.wait(timeout=0.05)
        self._stop = False
        self._thread = threading.Thread(target=loop, name="llada-engine", daemon=True)
        self._thread.start()

    def stop(self):
        self._stop = True
        with self.lock:
            self.wake.notify_all()
        if self._thread is not None:
            self._thread.join()
            self._thread = None


def positions_needed(prompt_len: int, params: SamplingParams, width: int, block_causal: bool = False) -> int:
    """Canvas positions a request needs: its block grid (a block-causal model), else prompt +
    answer + the window's overhang of its last block (`width` - block_length)."""
    if block_causal:
        return causal.grid_end(prompt_len, params.gen_length, params.block_length)
    return prompt_len + params.gen_length + width - params.block_length


CANVAS_STEP = 16


def canvas_length(need: int, max_length: int) -> int:
    """The bucket for a request needing `need` positions: `need` rounded up to a multiple of
    CANVAS_STEP (at most max_length). It depends on the request alone, so the request's
    answer is the one it gets alone; the padding is small because a block's cost grows
    faster than linearly in the canvas (powers of two cost 1.3-1.8x on lm-eval prompts)."""
    return min(max_length, -(-need // CANVAS_STEP) * CANVAS_STEP)


def seeds_from(rng, n: int) -> list[int]:
    """n request seeds drawn from a JAX key (for callers that hold a batch key)."""
    return [int(s) for s in np.asarray(jax.random.randint(rng, (n,), 0, 2**31 - 1))]
