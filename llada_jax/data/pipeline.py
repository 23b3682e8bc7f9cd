"""Input pipelines on grain: packed pre-training sequences and chat SFT rows.

Both pipelines tokenize everything up front into one in-memory array of fixed-length rows,
then read it through a grain `MapDataset`: shuffle (reshuffled every epoch), repeat,
shard across processes, batch. The iterator's position is a single integer, so
`get_state()` is a small JSON dict and a restored iterator continues bitwise exactly.

Sharding: all processes build the same global stream (same rows, same seed); process i
takes global elements i, i + P, i + 2P, ... So at step k the P processes hold disjoint
rows whose union is exactly the global batch k of one process at batch_size * P.

The default pre-training corpus is the running Python's standard library source, so the
demo needs no download. A corpus that does not fit in memory is tokenized once by
`llada_jax.prepare_data` and streamed by `llada_jax.data.prepared` through the same `batches`.
Reading files into documents (text, JSONL, the standard library) is `llada_jax.data.documents`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from typing import Sequence

import numpy as np

from llada_jax.data.documents import iter_documents, jsonl_field

_CACHE_VERSION = 1


def pack_documents(docs: Sequence[Sequence[int]], eos_id: int, seq_len: int) -> np.ndarray:
    """Concatenate docs, each followed by EOS, and cut into (n, seq_len) int32 rows.
    The last row is right-padded with EOS, so no token is dropped."""
    if seq_len < 1:
        raise ValueError(f"seq_len={seq_len}: expected >= 1")
    flat = np.fromiter((t for d in docs for t in (*d, eos_id)), dtype=np.int32)
    n_rows = max(1, -(-flat.size // seq_len))
    out = np.full(n_rows * seq_len, eos_id, dtype=np.int32)
    out[:flat.size] = flat
    return out.reshape(n_rows, seq_len)


def _cache_dir(tokenizer, cache_dir) -> str | None:
    if cache_dir is not None:
        return os.fspath(cache_dir)
    if tokenizer.path is None:
        return None
    return os.path.join(os.path.dirname(os.path.abspath(tokenizer.path)), "data_cache")


def pretrain_rows(files: Sequence[str], tokenizer, seq_len: int, *, max_bytes: int | None = None,
                  cache_dir: str | None = None, use_cache: bool = True) -> np.ndarray:
    """Tokenized and packed (n, seq_len) rows of the documents of `files` (stopping after
    the document that reaches `max_bytes` of UTF-8 text). Cached as .npy under `cache_dir`
    (default: `data_cache/` next to the tokenizer file), keyed by the files (path, size,
    mtime), the tokenizer file's hash, seq_len and max_bytes."""
    files = [os.path.abspath(os.fspath(f)) for f in files]
    if not files:
        raise ValueError("pretrain_rows: no files given")
    cache = _cache_dir(tokenizer, cache_dir) if use_cache else None
    if cache is not None:
        stats = [(f, os.stat(f).st_size, os.stat(f).st_mtime_ns) for f in files]
        key = json.dumps([_CACHE_VERSION, stats, tokenizer.fingerprint, seq_len, max_bytes])
        cache_file = os.path.join(cache, f"pretrain-{hashlib.sha256(key.encode()).hexdigest()[:20]}.npy")
        if os.path.exists(cache_file):
            return np.load(cache_file)
    docs, sources, total = [], [], 0
    for path, line, doc in iter_documents(files, with_source=True):
        if doc.strip():  # empty files (many __init__.py) would only add stray EOS tokens
            docs.append(doc)
            sources.append((path, line))
            total += len(doc.encode("utf-8"))
        if max_bytes is not None and total >= max_bytes:
            break
    if not docs:
        raise ValueError(f"no text in the training files {files[:3]}{' ...' if len(files) > 3 else ''}: "
                         "every file is empty or blank")
    encoded = tokenizer.encode_batch(docs)
    for ids, (path, line), doc in zip(encoded, sources, docs):
        if path.endswith(".jsonl"):
            tokenizer.refuse_mask(ids, f"{path}:{line}")
        else:
            tokenizer.refuse_mask(ids, path, doc, line)
    rows = pack_documents(encoded, tokenizer.eos_id, seq_len)
    if cache is not None:
        try:
            os.makedirs(cache, exist_ok=True)
            tmp = f"{cache_file}.tmp{os.getpid()}.npy"
            np.save(tmp, rows)
            os.replace(tmp, cache_file)  # atomic: processes sharing the directory may race
        except OSError as e:
            logging.warning("could not write the data cache %s (%s); continuing without it", cache, e)
    return rows


def sft_rows(jsonl_path: str, tokenizer, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids int32 (n, seq_len), prompt_mask bool (n, seq_len)) from a chat JSONL file
    (`{"messages": [{"role", "content"}, ...]}` per line, the last message the answer).

    Rows are `prompt, answer, <eot>, EOS, EOS...` right-padded with EOS to seq_len; the
    padding counts as answer (prompt_mask False), as in the LLaDA paper's SFT loss. Conversations
    longer than seq_len are DROPPED with a warning (truncating would cut the answer's
    end-of-turn and teach the model never to stop); if none fits, ValueError.
    """
    ids_rows, mask_rows, too_long, n = [], [], 0, 0
    for n, messages in jsonl_field(jsonl_path, "messages", "a 'messages' list"):
        try:
            ids, prompt_mask = tokenizer.encode_sft(messages)
        except ValueError as e:
            raise ValueError(f"{jsonl_path}:{n}: {e}") from e
        tokenizer.refuse_mask(ids, f"{jsonl_path}:{n}")
        if len(ids) > seq_len:
            too_long += 1
            continue
        pad = seq_len - len(ids)
        ids_rows.append(ids + [tokenizer.eos_id] * pad)
        mask_rows.append(prompt_mask + [False] * pad)
    if too_long:
        logging.warning("%s: dropped %d of %d conversations longer than seq_len=%d",
                        jsonl_path, too_long, too_long + len(ids_rows), seq_len)
    if not ids_rows:
        raise ValueError(f"{jsonl_path}: no conversation fits in seq_len={seq_len} "
                         f"({too_long} too long, {n} lines)")
    return np.asarray(ids_rows, dtype=np.int32), np.asarray(mask_rows, dtype=bool)


class DataIterator:
    """Iterator over batches (dicts of numpy arrays) with a JSON-serialisable state.

    The state records the position and the pipeline's configuration; restoring a state
    into a differently configured pipeline raises ValueError instead of silently
    producing different batches. The position counts global batches, which do not depend
    on how they are split over processes, so a state restores onto another process count
    with the same global batch size. `check`, if given, is called before every batch
    (a background integrity check raises through it).
    """

    _PER_PROCESS = ("batch_size", "process_index", "process_count")

    def __init__(self, dataset, config: dict, *, read_threads: int = 1, check=None):
        import grain  # here, not at the top: prepare_data's worker processes need none of it

        self._config = config
        self._check = check
        # a short prefetch; more reader threads for data read from disk
        self._it = dataset.to_iter_dataset(grain.ReadOptions(num_threads=read_threads,
                                                             prefetch_buffer_size=2 * read_threads)).__iter__()

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self._check is not None:
            self._check()
        return next(self._it)

    def get_state(self) -> dict:
        return {"next_index": int(self._it.get_state()["next_index"]), "config": dict(self._config)}

    def set_state(self, state: dict) -> None:
        if not isinstance(state, dict) or "next_index" not in state or not isinstance(state.get("config"), dict):
            raise ValueError(f"data iterator state {state!r}: expected a dict from get_state()")
        saved, mine = state["config"], self._config
        same = {k: v for k, v in saved.items() if k not in self._PER_PROCESS} == \
            {k: v for k, v in mine.items() if k not in self._PER_PROCESS}
        global_batch = [c.get("batch_size", 0) * c.get("process_count", 1) for c in (saved, mine)]
        if not same or global_batch[0] != global_batch[1]:
            raise ValueError(f"data iterator state was saved with config {saved} (global batch_size "
                             f"{global_batch[0]}), this pipeline is {mine} (global batch_size {global_batch[1]})")
        self._it.set_state({"next_index": int(state["next_index"])})


def batches(n: int, gather, *, batch_size, seed, shuffle, num_epochs, process_index, process_count,
            extra_config, read_threads: int = 1, check=None) -> DataIterator:
    """A DataIterator over `n` rows: batches `gather(row indices)` of this process's rows."""
    import grain
    import jax  # only for the process defaults; the pipeline itself is pure numpy

    process_index = jax.process_index() if process_index is None else process_index
    process_count = jax.process_count() if process_count is None else process_count
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index={process_index}: expected 0 <= index < process_count={process_count}")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}: expected >= 1")
    if not 0 <= seed < 2**32:
        raise ValueError(f"seed={seed}: expected an integer in [0, 2**32)")
    if num_epochs is not None and n * num_epochs < batch_size * process_count:
        raise ValueError(f"{n} rows x {num_epochs} epochs is less than one global batch "
                         f"({batch_size} x {process_count} processes)")
    ds = grain.MapDataset.range(n)
    if shuffle:
        ds = ds.shuffle(seed=seed)
    # after shuffle: grain reshuffles each epoch with seed + epoch
    ds = ds.repeat(num_epochs)
    ds = ds[process_index::process_count]
    ds = ds.batch(batch_size, drop_remainder=True)
    ds = ds.map(lambda idx: gather(np.asarray(idx)))
    config = dict(extra_config, rows=n, batch_size=batch_size, seed=seed, shuffle=shuffle,
                  num_epochs=num_epochs, process_index=process_index, process_count=process_count)
    return DataIterator(ds, config, read_threads=read_threads, check=check)


def _batches(arrays: dict[str, np.ndarray], **kw) -> DataIterator:
    n = len(next(iter(arrays.values())))
    return batches(n, lambda idx: {k: v[idx] for k, v in arrays.items()}, **kw)


def pretrain_iterator(files: Sequence[str], tokenizer, *, seq_len: int, batch_size: int, seed: int,
                      process_index: int | None = None, process_count: int | None = None,
                      shuffle: bool = True, max_bytes: int | None = None, cache_dir: str | None = None,
                      use_cache: bool = True, num_epochs: int | None = None) -> DataIterator:
    """Batches {"input_ids": int32 (batch_size, seq_len)} of packed documents (EOS after each),
    forever by default. batch_size is per process; see the module docstring for sharding."""
    rows = pretrain_rows(files, tokenizer, seq_len, max_bytes=max_bytes, cache_dir=cache_dir,
                         use_cache=use_cache)
    fp = hashlib.sha256(rows.tobytes()).hexdigest()[:16]
    return _batches({"input_ids": rows}, batch_size=batch_size, seed=seed, shuffle=shuffle,
                    num_epochs=num_epochs, process_index=process_index, process_count=process_count,
                    extra_config={"kind": "pretrain", "seq_len": seq_len, "data": fp})


def sft_iterator(jsonl_path: str, tokenizer, *, seq_len: int, batch_size: int, seed: int,
                 process_index: int | None = None, process_count: int | None = None,
                 shuffle: bool = True, num_epochs: int | None = None) -> DataIterator:
    """Batches {"input_ids": int32 (b, seq_len), "prompt_mask": bool (b, seq_len)} of chat
    conversations (see `sft_rows`), forever by default."""
    ids, prompt_mask = sft_rows(jsonl_path, tokenizer, seq_len)
    fp = hashlib.sha256(ids.tobytes() + prompt_mask.tobytes()).hexdigest()[:16]
    return _batches({"input_ids": ids, "prompt_mask": prompt_mask}, batch_size=batch_size, seed=seed,
                    shuffle=shuffle, num_epochs=num_epochs, process_index=process_index,
                    process_count=process_count, extra_config={"kind": "sft", "seq_len": seq_len, "data": fp})
