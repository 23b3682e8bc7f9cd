"""Tokenize a corpus once into a prepared directory: `python -m llada_jax.prepare_data
--inputs=PATHS_OR_GLOBS --out=DIR [--tokenizer=PATH] [--kind=pretrain|sft]`.

The format (flat token shards + index) and why are in `llada_jax.data.prepared`, which reads it.

Work is planned before anything is tokenized: the inputs are cut into units of about
`shard_bytes` of input (runs of whole text files; line-aligned byte ranges of a JSONL
file; runs of Parquet row groups), and unit i becomes shard i. The plan depends only on
the inputs, so the shards are the same whatever the worker timing; a process pool (one
worker per core) tokenizes units in parallel, each streaming its input into its shard
(memory: one encode batch and the document offsets of one shard). Each shard is written
to `.tmp` files, renamed, then marked complete by its `.json`; `index.json` comes last.
A rerun after a kill skips the complete shards and redoes the rest (byte-identical).
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import sys
import time

import numpy as np

from llada_jax import cli
from llada_jax.checkpoint import workdir as workdir_lib
from llada_jax.data import documents, prepared, tokenizer as tokenizer_lib

PLAN = "plan.json"
LOCK = workdir_lib.LOCK  # held while a run prepares --out (the workdir lock: pid, host)
_ENCODE_CHARS = 1 << 20  # text per encode batch
_PIECE_BYTES = 1 << 22  # a large text file is read and encoded in newline-cut pieces of this size


def _jsonl_cuts(path: str, unit_bytes: int) -> list[tuple[int, int]]:
    """(byte offset, line number) of the line starts where units of a JSONL file begin."""
    cuts, pos, line, target, size = [(0, 1)], 0, 1, unit_bytes, os.path.getsize(path)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            off = 0
            while pos + len(block) > target:
                k = block.find(b"\n", max(target - pos, off))
                if k < 0:
                    break
                line += block.count(b"\n", off, k + 1)
                off = k + 1
                if pos + off < size:
                    cuts.append((pos + off, line))
                target = pos + off + unit_bytes
            line += block.count(b"\n", off)
            pos += len(block)
    return cuts


def plan_units(files: list[str], unit_bytes: int) -> list[dict]:
    """Units of work in input order; see the module docstring."""
    units, text_run, run_bytes = [], [], 0

    def close_run():
        nonlocal text_run, run_bytes
        if text_run:
            units.append({"type": "text", "files": text_run, "bytes": run_bytes})
        text_run, run_bytes = [], 0

    for path in files:
        size = os.path.getsize(path)
        if path.endswith(".jsonl"):
            close_run()
            cuts = _jsonl_cuts(path, unit_bytes) + [(size, None)]
            units += [{"type": "jsonl", "file": path, "start": a, "end": b, "line": n, "bytes": b - a}
                      for (a, n), (b, _) in zip(cuts, cuts[1:])]
        elif path.endswith(".parquet"):
            close_run()
            import pyarrow.parquet as pq

            try:
                meta = pq.ParquetFile(path).metadata
            except Exception as e:  # noqa: BLE001 - pyarrow raises ArrowInvalid, OSError, ...
                raise ValueError(f"--inputs: {path}: not a readable Parquet file ({type(e).__name__}: {e})") from None
            group, nbytes, row = [], 0, 0
            for g in range(meta.num_row_groups):
                group.append(g)
                nbytes += meta.row_group(g).total_byte_size
                if nbytes >= unit_bytes or g == meta.num_row_groups - 1:
                    units.append({"type": "parquet", "file": path, "groups": group, "row": row, "bytes": nbytes})
                    row += sum(meta.row_group(i).num_rows for i in group)
                    group, nbytes = [], 0
        else:
            text_run.append(path)
            run_bytes += size
            if run_bytes >= unit_bytes:
                close_run()
    close_run()
    return units


def _char_boundary(block: bytes) -> int:
    """The last UTF-8 character boundary of `block`, where a line longer than a piece is cut."""
    cut = len(block)
    while cut > max(0, len(block) - 4) and (block[cut - 1] & 0xC0) == 0x80:
        cut -= 1
    if cut and block[cut - 1] >= 0xC0:  # the lead byte of the cut character goes with it
        cut -= 1
    return cut or len(block)


def _text_pieces(path: str):
    """(text, replaced bytes) pieces of one large text file, cut at newlines (always a
    character boundary in UTF-8), each encoded on its own (a token never spans a cut)."""
    rest = b""
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_PIECE_BYTES), b""):
            block = rest + block
            cut = block.rfind(b"\n") + 1 or _char_boundary(block)
            rest = block[cut:]
            yield documents.decode_text(block[:cut])
    if rest:
        yield documents.decode_text(rest)


def _documents(unit: dict, field: str):
    """(where, value, ends_document, replaced bytes) for the documents (pieces) of a unit."""
    if unit["type"] == "text":
        for path in unit["files"]:
            if os.path.getsize(path) <= _PIECE_BYTES:
                with open(path, "rb") as f:
                    text, n = documents.decode_text(f.read())
                if text.strip():  # empty files (many __init__.py) would only add stray EOS tokens
                    yield (path, 1), text, True, n
                continue
            prev, line = None, 1  # where: (file, the piece's first line)
            for piece in _text_pieces(path):  # the last piece ends the document
                if prev is not None:
                    yield (path, line), prev[0], False, prev[1]
                    line += prev[0].count("\n")
                prev = piece
            if prev is not None:
                yield (path, line), prev[0], True, prev[1]
    elif unit["type"] == "jsonl":
        for n, value in documents.jsonl_field(unit["file"], field, f"a {field!r} field", unit["start"], unit["end"],
                                         unit["line"]):
            yield f"{unit['file']}:{n}", value, True, 0
    else:
        import pyarrow.parquet as pq

        pf, row = pq.ParquetFile(unit["file"]), unit["row"]
        if field not in pf.schema_arrow.names:
            raise ValueError(f"{unit['file']}: no column {field!r} (columns: {pf.schema_arrow.names})")
        for batch in pf.iter_batches(row_groups=unit["groups"], columns=[field], batch_size=1024):
            for value in batch.column(0).to_pylist():
                yield f"{unit['file']}: row {row}", value, True, 0
                row += 1


_TOKENIZER = {}  # the worker process's tokenizer, loaded once by _init_worker


def _init_worker(tokenizer_path):
    _TOKENIZER["tok"] = tokenizer_lib.load_tokenizer(tokenizer_path)


def _encode(tok, items, kind):
    """Token ids (and prompt lengths) of a batch of (where, value, ends) items; a failure names its item."""
    if kind == "sft":
        out = []
        for where, messages, _ in items:
            try:
                ids, mask = tok.encode_sft(messages)
            except (ValueError, TypeError) as e:
                raise ValueError(f"{where}: {e}") from e
            tok.refuse_mask(ids, where)
            out.append((ids, sum(mask)))
        return out
    items = [(w, t, e) if isinstance(w, tuple) else ((w, None), t, e) for w, t, e in items]
    for (where, _), text, _ in items:
        if not isinstance(text, str):
            raise ValueError(f"{where}: the text is {type(text).__name__}, expected str")
    try:
        ids = tok.encode_batch([text for _, text, _ in items])
    except Exception:  # noqa: BLE001 - find and name the item the tokenizer fails on
        for (where, _), text, _ in items:
            try:
                tok.encode(text)
            except Exception as e:  # noqa: BLE001
                raise ValueError(f"{where}: the tokenizer fails on this text ({type(e).__name__}: {e})") from e
        raise
    for i, ((where, line), text, _) in zip(ids, items):
        tok.refuse_mask(i, where, text if line else None, line or 1)
    return [(i + [tok.eos_id] if ends else i, 0) for i, (_, _, ends) in zip(ids, items)]


def prepare_unit(job: tuple) -> dict:
    """Tokenize unit `i` into shard i of `out` (see the module docstring); returns its meta."""
    out, i, unit, kind, field, dtype = job
    tok = _TOKENIZER["tok"]
    base = os.path.join(out, prepared.shard_name(i))
    h, ends, prompts, n_tok, replaced, items, chars = hashlib.sha256(), [], [], 0, 0, [], 0
    with open(base + ".tokens.tmp", "wb") as f:
        def flush():
            nonlocal n_tok
            for (ids, prompt), (_, _, doc_end) in zip(_encode(tok, items, kind), items):
                raw = np.asarray(ids, dtype).tobytes()
                f.write(raw)
                h.update(raw)
                n_tok += len(ids)
                if doc_end:
                    ends.append(n_tok)
                    prompts.append(prompt)
            items.clear()

        for where, value, doc_end, n in _documents(unit, field):
            if unit["type"] != "text" and isinstance(value, str) and not value.strip():
                continue  # a blank document would only add a stray EOS (as data.pretrain_rows skips it)
            replaced += n
            items.append((where, value, doc_end))
            chars += len(value) if isinstance(value, str) else 1000
            if chars >= _ENCODE_CHARS:
                flush()
                chars = 0
        flush()
    docs = np.asarray(ends, np.int64) if kind == "pretrain" else np.asarray([ends, prompts], np.int64).T.reshape(-1, 2)
    with open(base + ".docs.npy.tmp", "wb") as f:
        np.save(f, docs)
    meta = {"name": prepared.shard_name(i), "tokens": n_tok, "documents": len(docs), "replaced_bytes": replaced,
            "sha256": {"tokens": h.hexdigest(), "docs.npy": prepared.sha256_file(base + ".docs.npy.tmp")}}
    os.replace(base + ".tokens.tmp", base + ".tokens")
    os.replace(base + ".docs.npy.tmp", base + ".docs.npy")
    _write_json(base + ".json", meta)  # last: the shard is complete
    return meta


def _write_json(path: str, obj) -> None:
    with open(path + ".tmp", "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
    os.replace(path + ".tmp", path)


def _tokenizer(out: str, tokenizer_path: str | None, files: list[str], kind: str, vocab_size: int,
               tokenizer_bytes: int):
    """The tokenizer, copied into (or trained into, or found in) `out`."""
    have = prepared.tokenizer_file(out)
    if tokenizer_path:
        tok = tokenizer_lib.load_tokenizer(tokenizer_path)
        dest = os.path.join(out, "tokenizer" + os.path.splitext(tok.path)[1])
        if have and (have != dest or prepared.sha256_file(have) != tok.fingerprint):
            raise ValueError(f"--out={out!r} was prepared with another tokenizer ({have}); use a new --out")
        if not have:
            shutil.copyfile(tok.path, dest + ".tmp")
            os.replace(dest + ".tmp", dest)
    elif have:
        pass
    elif kind == "sft":
        raise ValueError("--tokenizer is required for --kind=sft: the pre-training tokenizer")
    else:
        text = [f for f in files if not f.endswith(".parquet")]
        if not text:
            raise ValueError("--tokenizer is required for Parquet inputs (a tokenizer is trained on text/JSONL only)")
        logging.info("training a %d-piece sentencepiece tokenizer into %s", vocab_size, out)
        tokenizer_lib.train_sentencepiece(text, os.path.join(out, "tokenizer"), vocab_size, max_bytes=tokenizer_bytes)
    return tokenizer_lib.load_tokenizer(prepared.tokenizer_file(out))


def prepare(inputs, out: str, *, tokenizer: str | None = None, kind: str = "pretrain", field: str | None = None,
            shard_bytes: int = 1 << 26, workers: int | None = None, vocab_size: int = 32000,
            tokenizer_bytes: int = 4_000_000, progress: bool = True) -> dict:
    """Prepare (or finish preparing) `out` from `inputs`; returns the index."""
    if kind not in prepared.KINDS:
        raise ValueError(f"--kind={kind!r}: expected one of {prepared.KINDS}")
    if shard_bytes < 1:
        raise ValueError(f"--shard_bytes={shard_bytes}: expected >= 1")
    if workers is not None and (type(workers) is not int or workers < 1):
        raise ValueError(f"--workers={workers}: expected an integer >= 1 (omit it for one per core)")
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"--out={out!r} is a file; expected a new directory (or one prepare_data made)")
    field = field or ("text" if kind == "pretrain" else "messages")
    files = documents.expand_inputs(inputs)
    ours = ("tokenizer.model", "tokenizer.json", LOCK)  # a run killed before its plan leaves only these (and .tmp)
    if os.path.isdir(out) and not os.path.isfile(os.path.join(out, PLAN)) and any(
            f not in ours and ".tmp" not in f for f in os.listdir(out)):
        raise ValueError(f"--out={out!r} is a non-empty directory not made by prepare_data: "
                         "refusing to write into it; choose a new directory")
    os.makedirs(out, exist_ok=True)
    with workdir_lib.lock(out, "prepare_data", flag="--out"):  # a second run on --out: "in use"
        return _prepare(files, out, tokenizer, kind, field, shard_bytes, workers, vocab_size, tokenizer_bytes,
                        progress)


def _prepare(files, out, tokenizer, kind, field, shard_bytes, workers, vocab_size, tokenizer_bytes, progress):
    tok = _tokenizer(out, tokenizer, files, kind, vocab_size, tokenizer_bytes)
    stats = [[f, os.path.getsize(f), os.stat(f).st_mtime_ns] for f in files]
    settings = {"format": prepared.FORMAT, "version": prepared.VERSION, "kind": kind, "field": field,
                "shard_bytes": shard_bytes, "inputs": stats, "tokenizer": prepared.fingerprint(tok)}
    plan_path = os.path.join(out, PLAN)
    if os.path.isfile(plan_path):
        with open(plan_path) as f:
            plan = json.load(f)
        if plan["settings"] != settings:
            raise ValueError(f"--out={out!r} was (being) prepared from other inputs or settings: "
                             f"{plan['settings']} != {settings}; use a new --out")
    else:
        plan = {"settings": settings, "units": plan_units(files, shard_bytes)}
        _write_json(plan_path, plan)
    index_path = os.path.join(out, prepared.INDEX)
    if os.path.isfile(index_path):
        print(f"{out} is already prepared", file=sys.stderr)
        return prepared.read_index(out)
    units = plan["units"]
    dtype = "uint16" if tok.vocab_size <= 1 << 16 else "uint32"
    done = {i for i in range(len(units))
            if os.path.isfile(os.path.join(out, prepared.shard_name(i) + ".json"))}
    todo = [(out, i, u, kind, field, dtype) for i, u in enumerate(units) if i not in done]
    from tqdm import tqdm

    bar = tqdm(total=sum(u["bytes"] for u in units), initial=sum(units[i]["bytes"] for i in done), unit="B",
               unit_scale=True, desc=f"preparing {out}", disable=not progress, dynamic_ncols=True)
    t0, n_tokens = time.perf_counter(), 0
    workers = max(1, min(workers or os.cpu_count() or 1, len(todo) or 1))
    try:
        if workers == 1:  # no pool: simpler to debug, and what a one-unit corpus needs anyway
            _init_worker(tok.path)
            results = map(prepare_unit, todo)
        else:
            pool = multiprocessing.get_context("spawn").Pool(workers, _init_worker, (tok.path,))
            results = pool.imap_unordered(prepare_unit, todo)
        for job, meta in zip(todo, results):
            n_tokens += meta["tokens"]
            bar.update(units[int(meta["name"].split("-")[1])]["bytes"])
            bar.set_postfix(tokens_per_s=f"{n_tokens / (time.perf_counter() - t0):.3g}")
    finally:
        bar.close()
        if workers > 1:
            pool.terminate()
    return _write_index(out, tok, kind, dtype, len(units))


def _write_index(out, tok, kind, dtype, n_units) -> dict:
    shards = []
    for i in range(n_units):
        with open(os.path.join(out, prepared.shard_name(i) + ".json")) as f:
            shards.append(json.load(f))
    tokens = sum(s["tokens"] for s in shards)
    if not tokens:
        raise ValueError(f"the inputs of {out} hold no text (every document is empty)")
    replaced = sum(s["replaced_bytes"] for s in shards)
    documents.warn_replaced(replaced, sum(bool(s["replaced_bytes"]) for s in shards), "see the shards' replaced_bytes")
    index = {"format": prepared.FORMAT, "version": prepared.VERSION, "kind": kind, "dtype": dtype,
             "tokenizer": {"file": os.path.basename(tok.path), "fingerprint": prepared.fingerprint(tok),
                           "vocab_size": tok.vocab_size, "eos_id": tok.eos_id},
             "documents": sum(s["documents"] for s in shards), "tokens": tokens, "replaced_bytes": replaced,
             "fingerprint": hashlib.sha256("".join(s["sha256"]["tokens"] + s["sha256"]["docs.npy"]
                                                   for s in shards).encode()).hexdigest()[:16],
             "shards": shards}
    _write_json(os.path.join(out, prepared.INDEX), index)  # last: the directory is complete
    return index


def define_flags(fv):
    """The flags of `python -m llada_jax.prepare_data`, on absl FlagValues `fv`."""
    from absl import flags

    on = {"flag_values": fv}
    flags.DEFINE_string("inputs", "", "comma-separated files or globs: text, .jsonl, .parquet", **on)
    flags.DEFINE_string("out", None, "output directory (rerun to resume), required", **on)
    flags.DEFINE_string("tokenizer", None, "sentencepiece .model, tokenizer.json or a directory; "
                        "default: train a sentencepiece model on the inputs into OUT/tokenizer.model", **on)
    flags.DEFINE_enum("kind", "pretrain", prepared.KINDS, "pretrain: documents; sft: chats (messages lists)", **on)
    flags.DEFINE_string("field", None, "JSONL field / Parquet column (default: text, or messages for sft)", **on)
    flags.DEFINE_integer("vocab_size", 32000, "of a trained tokenizer", **on)
    flags.DEFINE_integer("shard_bytes", 1 << 26, "input bytes per shard", **on)
    flags.DEFINE_integer("workers", None, "processes, >= 1 (default: all cores)", **on)
    flags.DEFINE_boolean("verify", False, "check the sha256 of every shard of --out and exit", **on)


def main(argv=None):
    """`python -m llada_jax.prepare_data`, `argv` without the program name (default sys.argv[1:])."""
    args = cli.parse(define_flags, argv, __doc__.split("\n\n")[0], required=("out",))
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.verify:
            prepared.verify_shards(args.out, prepared.read_index(args.out, field="--out"))
            print(f"{args.out}: every shard matches its checksum")
            return
        index = prepare(args.inputs, args.out, tokenizer=args.tokenizer, kind=args.kind, field=args.field,
                        shard_bytes=args.shard_bytes, workers=args.workers, vocab_size=args.vocab_size)
    except (ValueError, OSError) as e:
        raise SystemExit(f"error: {e}") from None
    print(json.dumps({k: index[k] for k in ("kind", "documents", "tokens", "dtype")} | {"shards": len(index["shards"])}))
