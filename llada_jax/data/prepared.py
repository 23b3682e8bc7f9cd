"""Reading a prepared data directory (written by `python -m llada_jax.prepare_data`).

On-disk format: flat memory-mapped token arrays with an offset index, the OLMo approach,
rather than ArrayRecord. Why: a packed pre-training row is a window of the token STREAM
(`row k = stream[k * seq_len : (k + 1) * seq_len]`, documents followed by EOS), not a
record; with flat arrays that window is one or two memmap slices found by a binary
search over the shard offsets, so packing costs nothing at read time and needs no
materialised packed copy, whatever `seq_len` the training run picks. ArrayRecord would
store documents as records and need several reads plus concatenation per row. Memory is
flat in the corpus size: the page cache holds the tokens, the process only the index.

A directory holds:
- `shard-NNNNN.tokens`: headerless little-endian uint16 (vocabulary <= 65536) or uint32 ids;
  pre-training: every document followed by EOS; SFT: every conversation as
  `Tokenizer.encode_sft` renders it (prompt, answer, eot, EOS).
- `shard-NNNNN.docs.npy`: int64 document end offsets in the shard, (n,) for pre-training,
  (n, 2) for SFT: [end offset, prompt length].
- `shard-NNNNN.json`: the shard's counts and sha256 checksums, written last (the shard
  is complete iff it exists).
- the tokenizer file it was made with (`tokenizer.model` or `tokenizer.json`);
- `index.json`, written after every shard: format version, kind, dtype, tokenizer
  fingerprint (sha256 of the tokenizer file and its special ids), document and token
  counts, the shards with their checksums. Per-conversation prompt lengths (SFT) live in
  the shards' `docs.npy`, covered by the checksums.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading

import numpy as np

from llada_jax.data import pipeline

FORMAT = "llada-jax-prepared"
VERSION = 1
INDEX = "index.json"
KINDS = ("pretrain", "sft")


def shard_name(i: int) -> str:
    return f"shard-{i:05d}"


def fingerprint(tokenizer) -> str:
    """sha256 of the tokenizer file bytes and its special ids: the data's tokenizer identity."""
    specials = {name: getattr(tokenizer, name) for name in
                ("bos_id", "eos_id", "mask_id", "start_header_id", "end_header_id", "eot_id")}
    key = json.dumps({"file": tokenizer.fingerprint, "special": specials, "vocab": tokenizer.vocab_size},
                     sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def tokenizer_file(path: str) -> str | None:
    for name in ("tokenizer.model", "tokenizer.json"):
        if os.path.isfile(os.path.join(path, name)):
            return os.path.join(path, name)
    return None


def read_index(path: str, field: str = "data.path") -> dict:
    """The index of a prepared directory; `field` names the setting that gave `path` in errors."""
    index_path = os.path.join(path, INDEX)
    if not os.path.isfile(index_path):
        raise ValueError(f"{field}={path!r}: no {INDEX}; expected a directory written by "
                         "`python -m llada_jax.prepare_data` (an interrupted one: run it again to finish)")
    with open(index_path) as f:
        index = json.load(f)
    if index.get("format") != FORMAT or index.get("version") != VERSION:
        raise ValueError(f"{index_path}: format {index.get('format')!r} version {index.get('version')!r}, "
                         f"expected {FORMAT!r} version {VERSION}")
    return index


def check_tokenizer(path: str, index: dict, tokenizer, field: str = "data.path") -> None:
    """ValueError when prepared directory `path` (its `index`) was tokenized with another
    tokenizer than `tokenizer` (None: nothing to check)."""
    if tokenizer is not None and index["tokenizer"]["fingerprint"] != fingerprint(tokenizer):
        raise ValueError(f"{field}={path!r} was tokenized with another tokenizer (fingerprint "
                         f"{index['tokenizer']['fingerprint'][:12]}, this run's tokenizer "
                         f"{tokenizer.path} has {fingerprint(tokenizer)[:12]}): foreign shards refused")


def verify_shards(path: str, index: dict, checksums: bool = True) -> None:
    """Every shard present with its size (cheap) and, with `checksums`, its sha256."""
    itemsize = np.dtype(index["dtype"]).itemsize
    for s in index["shards"]:
        for suffix, what in (("tokens", s["tokens"] * itemsize), ("docs.npy", None)):
            f = os.path.join(path, f"{s['name']}.{suffix}")
            if not os.path.isfile(f):
                raise ValueError(f"{f}: missing; the prepared data in {path} is incomplete")
            if what is not None and os.path.getsize(f) != what:
                raise ValueError(f"{f}: {os.path.getsize(f)} bytes, the index says {what}: the shard is "
                                 "truncated or foreign; prepare the data again")
            if checksums and sha256_file(f) != s["sha256"][suffix]:
                raise ValueError(f"{f}: sha256 checksum mismatch: the shard is corrupt; prepare the data again")


class PreparedData:
    """The shards of a prepared directory, memory-mapped on first use (so the object
    pickles cheaply into grain worker processes)."""

    def __init__(self, path: str, tokenizer, kind: str, *, verify: str = "background"):
        if verify not in ("none", "size", "full", "background"):
            raise ValueError(f"verify={verify!r}: expected 'none', 'size', 'full' or 'background'")
        self.path = os.path.abspath(path)
        self.index = index = read_index(self.path)
        if index["kind"] != kind:
            raise ValueError(f"data.path={path!r} holds {index['kind']} data, this run needs {kind}")
        check_tokenizer(path, index, tokenizer)
        if verify != "none":
            verify_shards(self.path, index, checksums=verify == "full")
        self.error = None
        if verify == "background":  # the checksums of a large corpus take long: do not delay step 1
            threading.Thread(target=self._verify_in_background, daemon=True).start()
        self.eos_id = index["tokenizer"]["eos_id"]
        self.token_offsets = np.cumsum([0] + [s["tokens"] for s in index["shards"]], dtype=np.int64)
        self.doc_offsets = np.cumsum([0] + [s["documents"] for s in index["shards"]], dtype=np.int64)
        self._maps = None

    def _verify_in_background(self):
        try:
            verify_shards(self.path, self.index, checksums=True)
        except ValueError as e:
            self.error = e

    def check(self) -> None:
        if self.error is not None:
            raise self.error

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "_maps"} | {"_maps": None}

    def _shards(self):
        if self._maps is None:
            names = [s["name"] for s in self.index["shards"]]
            self._maps = [(np.memmap(os.path.join(self.path, f"{n}.tokens"), dtype=self.index["dtype"], mode="r")
                           if s["tokens"] else np.zeros(0, self.index["dtype"]),
                           np.load(os.path.join(self.path, f"{n}.docs.npy"), mmap_mode="r"))
                          for n, s in zip(names, self.index["shards"])]
        return self._maps

    def tokens(self, start: int, stop: int, segments: bool = False):
        """Stream tokens [start, stop) as int32 (and, with `segments`, the global number of
        documents that end before each position)."""
        out = np.empty(stop - start, np.int32)
        seg = np.empty(stop - start, np.int64) if segments else None
        shards = self._shards()
        i = int(np.searchsorted(self.token_offsets, start, side="right")) - 1
        pos = start
        while pos < stop:
            lo, hi = pos - self.token_offsets[i], min(stop, self.token_offsets[i + 1]) - self.token_offsets[i]
            out[pos - start:pos - start + hi - lo] = shards[i][0][lo:hi]
            if segments:
                ends = shards[i][1]
                seg[pos - start:pos - start + hi - lo] = (
                    self.doc_offsets[i] + np.searchsorted(ends, np.arange(lo, hi), side="right"))
            pos += hi - lo
            i += 1
        return out, seg


def packed_gather(src: PreparedData, seq_len: int, segment_ids: bool):
    """gather(row indices) -> {"input_ids": int32 (b, seq_len)[, "segment_ids"]}: row k is the
    stream window [k * seq_len, (k + 1) * seq_len), the last one right-padded with EOS (as
    `data.pack_documents`). Segment ids number the documents within a row from 1 (0: padding)."""
    total = int(src.token_offsets[-1])

    def gather(idx):
        ids = np.full((len(idx), seq_len), src.eos_id, np.int32)
        seg = np.zeros((len(idx), seq_len), np.int32) if segment_ids else None
        for r, k in enumerate(idx):
            start = int(k) * seq_len
            stop = min(start + seq_len, total)
            toks, docs = src.tokens(start, stop, segments=segment_ids)
            ids[r, :stop - start] = toks
            if segment_ids:
                seg[r, :stop - start] = docs - docs[0] + 1
        return {"input_ids": ids, **({"segment_ids": seg} if segment_ids else {})}
    return -(-total // seq_len), gather


def sft_gather(src: PreparedData, seq_len: int):
    """(rows, gather) over the conversations of at most seq_len tokens: {"input_ids",
    "prompt_mask"} right-padded with EOS (as `data.sft_rows`; longer ones are skipped)."""
    ends = [m[1][:, 0] for m in src._shards()]
    lengths = np.concatenate([np.diff(e, prepend=0) for e in ends]) if ends else np.zeros(0, np.int64)
    keep = np.flatnonzero(lengths <= seq_len)
    if len(keep) < len(lengths):
        import logging
        logging.warning("%s: skipping %d of %d conversations longer than seq_len=%d",
                        src.path, len(lengths) - len(keep), len(lengths), seq_len)
    if not len(keep):
        raise ValueError(f"{src.path}: no conversation fits in seq_len={seq_len}")

    def gather(idx):
        ids = np.full((len(idx), seq_len), src.eos_id, np.int32)
        mask = np.zeros((len(idx), seq_len), bool)
        shards = src._shards()
        for r, k in enumerate(keep[idx]):
            i = int(np.searchsorted(src.doc_offsets, k, side="right")) - 1
            docs = shards[i][1]
            j = int(k - src.doc_offsets[i])
            start = int(docs[j - 1, 0]) if j else 0
            end, prompt = int(docs[j, 0]), int(docs[j, 1])
            ids[r, :end - start] = shards[i][0][start:end]
            mask[r, :prompt] = True
        return {"input_ids": ids, "prompt_mask": mask}
    return len(keep), gather


def prepared_iterator(path: str, tokenizer, *, kind: str = "pretrain", seq_len: int, batch_size: int,
                      seed: int, process_index: int | None = None, process_count: int | None = None,
                      shuffle: bool = True, num_epochs: int | None = None, segment_ids: bool = False,
                      verify: str = "background", read_threads: int = 4) -> pipeline.DataIterator:
    """Batches of a prepared directory through grain (see `data.batches`: global shuffle by
    row index, reshuffled every epoch, each process reading only its rows, `read_threads`
    threads prefetching). Rows are computed from the index on the fly."""
    if seq_len < 1:
        raise ValueError(f"seq_len={seq_len}: expected >= 1")
    src = PreparedData(path, tokenizer, kind, verify=verify)
    if kind == "pretrain":
        n, gather = packed_gather(src, seq_len, segment_ids)
    else:
        n, gather = sft_gather(src, seq_len)
    if n == 0:
        raise ValueError(f"data.path={path!r} holds no tokens")
    config = {"kind": kind, "seq_len": seq_len, "data": src.index["fingerprint"], "segment_ids": segment_ids}
    return pipeline.batches(n, gather, batch_size=batch_size, seed=seed, shuffle=shuffle, num_epochs=num_epochs,
                        process_index=process_index, process_count=process_count, extra_config=config,
                        read_threads=read_threads, check=src.check)
