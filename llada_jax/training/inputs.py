"""What the training loop reads, from the config: the tokenizer, the train and eval
iterators (llada_jax.data, or a synthetic task of llada_jax.data.tasks). The model
config from a run config is `llada_jax.model.from_config.model_config`; the rules about
the data fields and paths are `llada_jax.config.rules`' (the readers here run its path
checks too)."""

from __future__ import annotations

import logging
import os

from llada_jax import objectives
from llada_jax.config import rules, with_model_defaults
from llada_jax.data import documents, tasks

log = logging.getLogger(__name__)


def load_tokenizer(config, workdir: str):
    """The tokenizer named by config.data.tokenizer; if empty, one trained on the training
    files into workdir/tokenizer.model (reused when present). None for synthetic data."""
    from llada_jax.data import tokenizer

    d = config.data
    if d.source == "synthetic":
        return None
    if d.tokenizer:
        return tokenizer.load_tokenizer(d.tokenizer)
    if d.source == "prepared":  # the tokenizer the data was made with, stored beside it
        from llada_jax.data import prepared

        found = prepared.tokenizer_file(rules.prepared_dir(d.path, "path"))
        if found is None:
            raise ValueError(f"config.data.path={d.path!r} holds no tokenizer file; set config.data.tokenizer")
        return tokenizer.load_tokenizer(found)
    path = os.path.join(workdir, "tokenizer.model")
    if os.path.exists(path):
        return tokenizer.load_tokenizer(path)
    if d.source == "jsonl":
        raise ValueError("config.data.tokenizer is empty: SFT on JSONL needs the pre-training tokenizer")
    vocab = with_model_defaults(config).model.vocab_size
    log.info("training a %d-piece sentencepiece tokenizer into %s", vocab, path)
    return tokenizer.train_sentencepiece(train_files(config), os.path.join(workdir, "tokenizer"), vocab, max_bytes=min(config.data.max_bytes or 4_000_000, 4_000_000))


def train_files(config, split="train"):
    d = config.data
    if d.source == "stdlib":
        return documents.stdlib_files(split)
    return rules.text_files(d.train_files if split == "train" else d.eval_files, f"{split}_files")


def iterators(config, tokenizer, *, process_index, process_count, cache_dir=None):
    """(train_iterator, make_eval_iterator); batches hold this process's rows. `cache_dir`:
    where the in-memory text sources cache their tokenized rows (the training loop passes
    WORKDIR/data_cache, so a run never writes next to someone else's tokenizer file)."""
    from llada_jax.data import pipeline

    d = config.data
    local = d.batch_size // process_count
    kw = dict(seq_len=d.seq_len, batch_size=local, process_index=process_index, process_count=process_count)
    if d.source == "synthetic":
        vocab = with_model_defaults(config).model.vocab_size
        task = tasks.make_task(d.task, n_items=d.task_items, n_values=min(d.task_values, vocab - 2),
                               vocab_size=vocab, seq_len=d.seq_len)
        kw.pop("seq_len")

        def make(seed):
            return tasks.TaskIterator(task, seed=seed, sft=objectives.data_kind(d.kind) == "sft", **kw)
        return make(config.train.seed), (lambda: make(config.train.seed + 1_000_003))
    evaluating = rules.evaluates(config)
    if d.source == "prepared":
        from llada_jax.data import prepared

        pkw = dict(kw, kind=objectives.data_kind(d.kind))
        if evaluating:  # the held-out iterator is made at the first evaluation: check it now
            prepared.check_tokenizer(d.eval_path, prepared.read_index(d.eval_path, "config.data.eval_path"),
                                     tokenizer, "config.data.eval_path")
        train = prepared.prepared_iterator(d.path, tokenizer, seed=config.train.seed, **pkw)
        return train, (lambda: prepared.prepared_iterator(d.eval_path, tokenizer, seed=0, shuffle=False,
                                                          verify="size", **pkw))
    if d.source == "jsonl":
        eval_path = d.eval_jsonl or d.train_jsonl
        train = pipeline.sft_iterator(d.train_jsonl, tokenizer, seed=config.train.seed, **kw)
        return train, (lambda: pipeline.sft_iterator(eval_path, tokenizer, seed=0, shuffle=False, **kw))
    mb = d.max_bytes or None
    kw["cache_dir"] = cache_dir
    train = pipeline.pretrain_iterator(train_files(config, "train"), tokenizer, max_bytes=mb,
                                       seed=config.train.seed, **kw)
    # held-out files are only needed (and only checked) when the run evaluates
    eval_files = train_files(config, "eval") if evaluating else None
    return train, (lambda: pipeline.pretrain_iterator(eval_files, tokenizer, seed=0, shuffle=False,
                                                  max_bytes=None if mb is None else max(mb // 10, 100_000), **kw))
