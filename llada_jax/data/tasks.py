"""Synthetic tasks whose answers can be checked (`config.data.source="synthetic"`), for
tests, sampler benchmarks and quick studies.

Token ids are the task's own (no tokenizer): values 0..n_values-1, and the model's EOS
(vocab - 2) and mask (vocab - 1), the ids `model.from_config.model_config` gives synthetic data.
Every task has `prompt_len`: the positions before it are the prompt (never masked in
SFT), the rest is the answer that SFT trains on and the sampler generates
(gen_length = seq_len - prompt_len).
"""

from __future__ import annotations

import numpy as np

TASKS = ("arith", "sort", "cumsum", "cummax")


class ArithmeticTask:
    """Row r is the sequence (start + stride * position) mod `n_values`, start and stride
    random; the prompt is the first quarter. Learnable in a few steps: for tests."""

    def __init__(self, *, n_values: int, seq_len: int, **unused):
        self.n_values, self.seq_len, self.prompt_len = max(2, n_values), seq_len, seq_len // 4

    def rows(self, rng: np.random.Generator, n: int):
        start = rng.integers(0, self.n_values, size=(n, 1))
        stride = rng.integers(1, 4, size=(n, 1))
        ids = ((start + stride * np.arange(self.seq_len)) % self.n_values).astype(np.int32)
        return ids, _prompt_mask(self.prompt_len, ids.shape)

    def score(self, ids, generated):
        return _score(ids, generated, self.prompt_len)


class SortTask:
    """Prompt: `n_items` values drawn uniformly from [0, n_values); answer: them sorted."""

    def __init__(self, *, n_items: int, n_values: int, vocab_size: int, seq_len: int, **unused):
        if n_values + 3 > vocab_size:
            raise ValueError(f"sort task: vocab_size={vocab_size}, expected >= n_values + 3 = {n_values + 3}")
        if seq_len < 2 * n_items + 1:
            raise ValueError(f"sort task: seq_len={seq_len}, expected >= 2 * n_items + 1 = {2 * n_items + 1}")
        self.n_items, self.n_values, self.seq_len = n_items, n_values, seq_len
        self.sep, self.eos, self.mask = n_values, vocab_size - 2, vocab_size - 1
        self.prompt_len = n_items + 1

    def rows(self, rng: np.random.Generator, n: int):
        """(input_ids (n, seq_len) int32, prompt_mask (n, seq_len) bool)."""
        values = rng.integers(0, self.n_values, size=(n, self.n_items))
        ids = np.full((n, self.seq_len), self.eos, np.int32)
        ids[:, : self.n_items] = values
        ids[:, self.n_items] = self.sep
        ids[:, self.prompt_len: self.prompt_len + self.n_items] = self.answer(values)
        return ids, _prompt_mask(self.prompt_len, ids.shape)

    def answer(self, values):
        return np.sort(values, axis=1)

    def score(self, ids, generated):
        return _score(ids, generated, self.prompt_len)


class CumsumTask(SortTask):
    """The sort task's prompt; answer: the running sums mod `n_values`, a carry-like
    chain (answer i = answer i-1 + value i, mod n_values), so each answer token depends
    on the one before it, not only on the prompt."""

    def answer(self, values):
        return np.cumsum(values, axis=1) % self.n_values


class CummaxTask(SortTask):
    """The sort task's prompt; answer: the running maximum (answer i = max(answer i-1,
    value i)), a chain like cumsum's without its modular arithmetic, which small models
    learn slowly."""

    def answer(self, values):
        return np.maximum.accumulate(values, axis=1)


def _prompt_mask(prompt_len, shape):
    return np.broadcast_to(np.arange(shape[1]) < prompt_len, shape).copy()


def _score(ids, generated, prompt_len):
    """(exact-match accuracy of the answers, per-token accuracy)."""
    want, got = np.asarray(ids)[:, prompt_len:], np.asarray(generated)[:, prompt_len:]
    return float(np.mean(np.all(want == got, axis=1))), float(np.mean(want == got))


class TaskIterator:
    """Batches of a task; global batch k is a pure function of (seed, k), and this
    process yields its contiguous rows ("prompt_mask" too when `sft`). State: {"batch": k}."""

    def __init__(self, task, *, batch_size, seed, process_index=0, process_count=1, sft=False):
        self.task, self.batch_size, self.seed, self.sft = task, batch_size, seed, sft
        self.process_index, self.process_count, self.batch = process_index, process_count, 0

    def __iter__(self):
        return self

    def __next__(self):
        rng = np.random.default_rng([self.seed, self.batch])
        self.batch += 1
        ids, prompt_mask = self.task.rows(rng, self.batch_size * self.process_count)
        rows = slice(self.process_index * self.batch_size, (self.process_index + 1) * self.batch_size)
        return {"input_ids": ids[rows], "prompt_mask": prompt_mask[rows]} if self.sft else {"input_ids": ids[rows]}

    def get_state(self):
        return {"batch": self.batch}

    def set_state(self, state):
        if not isinstance(state, dict) or "batch" not in state:
            raise ValueError(f"task iterator state {state!r}: expected {{'batch': int}}")
        self.batch = int(state["batch"])


def make_task(name: str, **kw):
    """kw: n_items, n_values, vocab_size, seq_len (each task takes what it needs)."""
    if name == "arith":
        return ArithmeticTask(**kw)
    if name == "sort":
        return SortTask(**kw)
    if name == "cumsum":
        return CumsumTask(**kw)
    if name == "cummax":
        return CummaxTask(**kw)
    raise ValueError(f"task={name!r}: expected one of {TASKS}")
