"""Documents: reading text sources into strings, before any tokenizer.

`stdlib_files` (the default corpus: the running Python's standard library, split into
train and eval by a hash of each path), `expand_inputs` (the files prepare_data's
`--inputs` names: comma-separated paths or globs), `iter_documents` (a text file is one
document, a `.jsonl` file one `{"text": ...}` per line), `jsonl_field` (one field of every line of a
JSONL file, with the file and line named in errors), `jsonl_objects` (every line of a small JSONL
file, parsed, each named as its reader names lines) and the UTF-8 handling they share
(`decode_text`, `warn_replaced`: undecodable bytes become U+FFFD and are counted).

Used by the input pipelines (`llada_jax.data.pipeline`), corpus preparation
(`llada_jax.data.prepare`) and tokenizer training (`llada_jax.data.tokenizer`), so the
tokenizer does not depend on the pipelines.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import pathlib
import re
import sysconfig
from typing import Callable, Iterator, Sequence

_EXCLUDED_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}


def stdlib_files(split: str = "train", holdout_fraction: float = 0.05, *, root: str | None = None) -> list[str]:
    """The .py files of the standard library (test directories and site-packages excluded),
    split by a hash of the relative path: a file is in "eval" iff its hash falls below
    `holdout_fraction`. Returned in hash order, a fixed pseudo-random order, so that a
    byte cap (`max_bytes`) takes a sample of the whole library, not its first packages."""
    if split not in ("train", "eval"):
        raise ValueError(f"split={split!r}: expected 'train' or 'eval'")
    if not 0.0 < holdout_fraction < 1.0:
        raise ValueError(f"holdout_fraction={holdout_fraction}: expected a value in (0, 1)")
    base = pathlib.Path(root or sysconfig.get_paths()["stdlib"])
    if not base.is_dir():
        raise ValueError(f"stdlib root {base} is not a directory")
    keyed = []
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames[:] = sorted(d for d in dirnames if d not in _EXCLUDED_DIRS)  # prune, don't walk into
        for name in filenames:
            if not name.endswith(".py"):
                continue
            rel = pathlib.Path(dirpath, name).relative_to(base).as_posix()
            h = int.from_bytes(hashlib.sha256(rel.encode()).digest()[:8], "big")
            if (h / 2**64 < holdout_fraction) == (split == "eval"):
                keyed.append((h, os.path.join(dirpath, name)))
    return [p for _, p in sorted(keyed)]


def expand_inputs(spec) -> list[str]:
    """Comma-separated paths or globs (each glob sorted) -> existing files, in order."""
    parts = [p.strip() for p in (spec.split(",") if isinstance(spec, str) else spec) if p.strip()]
    files = []
    for p in parts:
        found = sorted(glob.glob(p)) if glob.has_magic(p) else [p]
        found = [f for f in found if os.path.isfile(f)]
        if not found:
            raise ValueError(f"--inputs: {p!r} matches no file")
        files += [os.path.abspath(f) for f in found]
    if not files:
        raise ValueError("--inputs is empty: expected comma-separated files or globs")
    return files


def decode_text(raw: bytes) -> tuple[str, int]:
    """(text, number of bytes that were not UTF-8): each such byte becomes U+FFFD."""
    try:
        return raw.decode("utf-8"), 0
    except UnicodeDecodeError:
        # surrogateescape maps each undecodable byte to one lone surrogate: count and replace them
        return re.subn("[\udc80-\udcff]", "\ufffd", raw.decode("utf-8", "surrogateescape"))


def warn_replaced(replaced: int, files: int, first: str) -> None:
    if replaced:
        logging.warning("replaced %d bytes that are not UTF-8 with U+FFFD in %d file(s) (first: %s)",
                        replaced, files, first)


def iter_documents(files: Sequence[str], with_source: bool = False) -> Iterator:
    """Documents of `files`: a `.jsonl` file gives one `{"text": ...}` per line, any other
    file is one document (read as UTF-8; undecodable bytes are replaced, and how many is
    logged once, at the end). With `with_source`: (path, first line number, text)."""
    replaced, bad_files, first = 0, 0, ""
    for path in files:
        path = os.fspath(path)
        if not path.endswith(".jsonl"):
            with open(path, "rb") as f:
                text, n = decode_text(f.read())
            replaced, bad_files, first = replaced + n, bad_files + bool(n), first or (path if n else "")
            yield (path, 1, text) if with_source else text
            continue
        for n, text in jsonl_field(path, "text", "a 'text' field"):
            if not isinstance(text, str):
                raise ValueError(f"{path}:{n}: 'text' is {type(text).__name__}, expected str")
            yield (path, n, text) if with_source else text
    warn_replaced(replaced, bad_files, first)


def jsonl_field(path: str, field: str, what: str, start: int = 0, end: int | None = None,
                first_line: int = 1) -> Iterator[tuple[int, object]]:
    """(line number, value of `field`) for every non-blank line of a JSONL file (or of the
    lines starting in bytes [start, end), `start` a line start numbered `first_line`); a
    line that is not UTF-8 JSON object holding `field` raises ValueError naming file and line."""
    with open(path, "rb") as f:
        f.seek(start)
        n = first_line - 1
        while end is None or f.tell() < end:
            line = f.readline()
            if not line:
                break
            n += 1
            if not line.strip():
                continue
            try:
                value = json.loads(line)[field]
            except (ValueError, KeyError, TypeError) as e:  # JSONDecodeError, UnicodeDecodeError
                raise ValueError(f"{path}:{n}: expected a JSON object with {what}, in UTF-8 ({e})") from e
            yield n, value


def jsonl_objects(path: str, where: Callable[[int], str]) -> Iterator[tuple[int, str, object]]:
    """(line number n, `where(n)`, the parsed line) for every non-blank line of a JSONL file;
    a line that is not JSON raises ValueError "`where(n)`: not JSON (...)"."""
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where(n)}: not JSON ({e.msg})") from None
            yield n, where(n), obj
