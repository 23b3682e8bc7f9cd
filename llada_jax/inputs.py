"""What the training loop reads, from the config: the tokenizer, the train and eval
iterators (llada_jax.data, or a synthetic source for tests and benchmarks) and the
model config with the tokenizer's special ids."""

from __future__ import annotations

import dataclasses
import logging
import os

import numpy as np

from llada_jax.model import LLaDAConfig

log = logging.getLogger(__name__)
SOURCES = ("stdlib", "files", "jsonl", "synthetic")


class SyntheticIterator:
    """Learnable synthetic batches: row r of global batch k is an arithmetic sequence
    (start + stride * position) mod `modulus`, start and stride drawn from (seed, k, r).
    Global batch k is a pure function of (seed, k); this process yields its contiguous
    rows. State: {"batch": k}. SFT adds a prompt_mask on the first quarter of each row."""

    def __init__(self, *, seq_len, batch_size, seed, process_index=0, process_count=1, vocab=64, sft=False):
        self.seq_len, self.batch_size, self.seed = seq_len, batch_size, seed
        self.process_index, self.process_count = process_index, process_count
        self.modulus, self.sft, self.batch = max(2, vocab), sft, 0

    def __iter__(self):
        return self

    def __next__(self):
        rng = np.random.default_rng([self.seed, self.batch])
        self.batch += 1
        n = self.batch_size * self.process_count
        start = rng.integers(0, self.modulus, size=(n, 1))
        stride = rng.integers(1, 4, size=(n, 1))
        rows = slice(self.process_index * self.batch_size, (self.process_index + 1) * self.batch_size)
        ids = ((start + stride * np.arange(self.seq_len)) % self.modulus).astype(np.int32)[rows]
        out = {"input_ids": ids}
        if self.sft:
            out["prompt_mask"] = np.broadcast_to(np.arange(self.seq_len) < self.seq_len // 4, ids.shape).copy()
        return out

    def get_state(self):
        return {"batch": self.batch}

    def set_state(self, state):
        if not isinstance(state, dict) or "batch" not in state:
            raise ValueError(f"synthetic iterator state {state!r}: expected {{'batch': int}}")
        self.batch = int(state["batch"])


def _files(spec: str, field: str) -> list[str]:
    files = [f for f in (s.strip() for s in spec.split(",")) if f]
    if not files:
        raise ValueError(f"config.data.{field}={spec!r}: expected comma-separated text files")
    for f in files:
        if not os.path.isfile(f):
            raise ValueError(f"config.data.{field}: {f!r} does not exist")
    return files


def load_tokenizer(config, workdir: str):
    """The tokenizer named by config.data.tokenizer; if empty, one trained on the training
    files into workdir/tokenizer.model (reused when present). None for synthetic data."""
    from llada_jax import tokenizer as tok

    d = config.data
    if d.source == "synthetic":
        return None
    if d.tokenizer:
        return tok.load_tokenizer(d.tokenizer)
    path = os.path.join(workdir, "tokenizer.model")
    if os.path.exists(path):
        return tok.load_tokenizer(path)
    if d.source == "jsonl":
        raise ValueError("config.data.tokenizer is empty: SFT on JSONL needs the pre-training tokenizer")
    log.info("training a %d-piece sentencepiece tokenizer into %s", config.model.vocab_size, path)
    return tok.train_sentencepiece(train_files(config), os.path.join(workdir, "tokenizer"),
                                   config.model.vocab_size, max_bytes=min(config.data.max_bytes or 4_000_000, 4_000_000))


def train_files(config, split="train"):
    from llada_jax import data

    d = config.data
    if d.source == "stdlib":
        return data.stdlib_files(split)
    return _files(d.train_files if split == "train" else d.eval_files, f"{split}_files")


def model_config(config, tokenizer) -> LLaDAConfig:
    """LLaDAConfig from config.model; special ids left at -1 come from the tokenizer
    (synthetic data: mask = vocab - 1, eos = pad = vocab - 2)."""
    m = config.model.to_dict()
    v = m["vocab_size"]
    if tokenizer is not None:
        if tokenizer.vocab_size > v:
            raise ValueError(f"config.model.vocab_size={v}: expected >= the tokenizer's {tokenizer.vocab_size}")
        defaults = {"mask_token_id": tokenizer.mask_id, "eos_token_id": tokenizer.eos_id,
                    "pad_token_id": tokenizer.eos_id}
    else:
        defaults = {"mask_token_id": v - 1, "eos_token_id": v - 2, "pad_token_id": v - 2}
    for k, val in defaults.items():
        if m[k] == -1:
            m[k] = val
    names = {f.name for f in dataclasses.fields(LLaDAConfig)}
    return LLaDAConfig(**{k: val for k, val in m.items() if k in names})


def iterators(config, tokenizer, *, process_index, process_count, eval_only=False):
    """(train_iterator, make_eval_iterator); batches hold this process's rows."""
    from llada_jax import data

    d = config.data
    local = d.batch_size // process_count
    kw = dict(seq_len=d.seq_len, batch_size=local, process_index=process_index, process_count=process_count)
    if d.source == "synthetic":
        vocab = min(64, config.model.vocab_size - 2)
        def make(seed):
            return SyntheticIterator(seed=seed, vocab=vocab, sft=d.kind == "sft", **kw)
        return (None if eval_only else make(config.train.seed)), (lambda: make(config.train.seed + 1_000_003))
    if d.source == "jsonl":
        if not d.train_jsonl:
            raise ValueError("config.data.train_jsonl is empty: expected a chat JSONL file for SFT")
        eval_path = d.eval_jsonl or d.train_jsonl
        train = None if eval_only else data.sft_iterator(d.train_jsonl, tokenizer, seed=config.train.seed, **kw)
        return train, (lambda: data.sft_iterator(eval_path, tokenizer, seed=0, shuffle=False, **kw))
    mb = d.max_bytes or None
    train = None if eval_only else data.pretrain_iterator(train_files(config, "train"), tokenizer, max_bytes=mb,
                                                          seed=config.train.seed, **kw)
    eval_files = train_files(config, "eval")
    return train, (lambda: data.pretrain_iterator(eval_files, tokenizer, seed=0, shuffle=False,
                                                  max_bytes=None if mb is None else max(mb // 10, 100_000), **kw))
