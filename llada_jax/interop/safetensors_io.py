"""Safetensors files, read and written directly (8-byte little-endian header length,
JSON header, raw bytes): the `safetensors` numpy backend cannot handle bfloat16, and its
writer wants every tensor in memory at once, while import and export stream one tensor
at a time."""

from __future__ import annotations

import json
import os
import struct

import numpy as np

_ST_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
              "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool"}


def np_dtype(name) -> np.dtype:
    """numpy dtype for a name like "bfloat16" (ml_dtypes, which jax installs, provides bf16)."""
    import ml_dtypes

    if str(name) in ("bfloat16", "bf16"):
        return np.dtype(ml_dtypes.bfloat16)
    try:
        return np.dtype(name)
    except TypeError:
        raise ValueError(f"dtype={name!r}: expected a numpy dtype name such as 'float32' or 'bfloat16'") from None


def _st_code(dtype: np.dtype) -> str:
    for code, name in _ST_DTYPES.items():
        if np_dtype(name) == dtype:
            return code
    raise ValueError(f"dtype {dtype} has no safetensors code (expected one of {sorted(_ST_DTYPES.values())})")


def read_header(file: str) -> tuple[dict, int]:
    """(tensor name -> {"dtype", "shape", "data_offsets"}, byte offset of the data)."""
    with open(file, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ValueError(f"{file}: not a safetensors file (shorter than 8 bytes)")
        (n,) = struct.unpack("<Q", raw)
        if n > 100 * 2**20:
            raise ValueError(f"{file}: safetensors header of {n} bytes, expected under 100 MiB")
        raw = f.read(n)
    try:
        header = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{file}: not a safetensors file (its header is not JSON: {e})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{file}: not a safetensors file (its header is not a JSON object)")
    header.pop("__metadata__", None)
    for name, entry in header.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("shape"), list) or \
                not isinstance(entry.get("data_offsets"), list) or len(entry["data_offsets"]) != 2:
            raise ValueError(f"{file}: tensor {name!r} has a malformed header entry {entry!r}")
        if entry.get("dtype") not in _ST_DTYPES:
            raise ValueError(f"{file}: tensor {name!r} has dtype {entry.get('dtype')!r}, "
                             f"expected one of {sorted(_ST_DTYPES)}")
    return header, 8 + n


class DirReader:
    """The tensors of a Hugging Face directory, read one at a time with plain file reads.

    Not a memory map on purpose: touched pages of a mapped file count towards the
    process's resident set until unmapped, so mapping a 16 GB file and reading it all
    would show (and, under pressure, cost) 16 GB; a read into a fresh array frees it.
    """

    def __init__(self, path: str):
        index = os.path.join(path, "model.safetensors.index.json")
        if os.path.exists(index):
            try:
                with open(index) as f:
                    weight_map = json.load(f).get("weight_map")
            except (ValueError, UnicodeDecodeError, AttributeError) as e:
                raise ValueError(f"{index}: not a JSON object with a 'weight_map' ({e})") from None
            if not isinstance(weight_map, dict):
                raise ValueError(f"{index}: expected a 'weight_map' object of tensor name -> file")
            files = sorted(set(weight_map.values()))
            for fname in files:
                # The name must stay inside the directory; the file itself may be a symlink out of
                # it (a hub cache's snapshot links each shard to ../../blobs/<sha>).
                parts = os.path.normpath(str(fname)).split(os.sep)
                if not isinstance(fname, str) or os.path.isabs(fname) or ".." in parts:
                    raise ValueError(f"{index}: weight_map names {fname!r}, outside {path}; expected file "
                                     f"names inside the directory")
        elif os.path.exists(os.path.join(path, "model.safetensors")):
            weight_map, files = None, ["model.safetensors"]
        else:
            raise FileNotFoundError(f"{path}: expected model.safetensors or model.safetensors.index.json")
        self.entries = {}  # name -> (file, dtype, shape, begin byte, end byte)
        for fname in files:
            file = os.path.join(path, fname)
            header, base = read_header(file)
            for name, e in header.items():
                if weight_map is not None and weight_map.get(name) != fname:
                    raise ValueError(f"{file}: holds tensor {name!r}, but the index maps it to "
                                     f"{weight_map.get(name)!r}")
                begin, end = e["data_offsets"]
                self.entries[name] = (file, np_dtype(_ST_DTYPES[e["dtype"]]), tuple(e["shape"]),
                                      base + begin, base + end)
        if weight_map is not None and set(weight_map) != set(self.entries):
            name = sorted(set(weight_map) - set(self.entries))[0]
            raise ValueError(f"index maps tensor {name!r} to {weight_map[name]!r}, which does not hold it")
        self.names = list(self.entries)

    def shape(self, name):
        return self.entries[name][2]

    def dtype(self, name):
        return self.entries[name][1]

    def read(self, name) -> np.ndarray:
        file, dtype, shape, begin, end = self.entries[name]
        count = int(np.prod(shape, dtype=np.int64))
        if end - begin != count * dtype.itemsize:
            raise ValueError(f"{file}: tensor {name!r} spans {end - begin} bytes, expected "
                             f"{count * dtype.itemsize} for shape {shape} {dtype}")
        out = np.empty(count, dtype)
        with open(file, "rb") as f:
            f.seek(begin)
            if f.readinto(out.view(np.uint8)) != end - begin:
                raise ValueError(f"{file}: truncated while reading tensor {name!r}")
        return out.reshape(shape)


def nbytes(shape, dtype) -> int:
    return int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize


def plan_shards(entries, dtype, max_bytes: int) -> list[tuple[str, list]]:
    """Split (name, shape) entries, in order, into files of at most max_bytes (a larger
    tensor gets a file of its own), named as transformers names them."""
    groups, size = [[]], 0
    for name, shape in entries:
        nb = nbytes(shape, dtype)
        if groups[-1] and size + nb > max_bytes:
            groups.append([])
            size = 0
        groups[-1].append((name, shape))
        size += nb
    if len(groups) == 1:
        return [("model.safetensors", groups[0])]
    n = len(groups)
    return [(f"model-{k + 1:05d}-of-{n:05d}.safetensors", g) for k, g in enumerate(groups)]


class ShardWriter:
    """Writes one safetensors file whose tensors arrive one at a time, in header order:
    the header is known up front (shapes and dtype), so nothing is buffered."""

    def __init__(self, file: str, entries, dtype):
        self.dtype, self.expect = np.dtype(dtype), list(entries)
        header, offset = {"__metadata__": {"format": "pt"}}, 0
        for name, shape in self.expect:
            nb = nbytes(shape, self.dtype)
            header[name] = {"dtype": _st_code(self.dtype), "shape": list(shape), "data_offsets": [offset, offset + nb]}
            offset += nb
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)  # data starts 8-byte aligned, as the reference writer does
        self.f = open(file, "wb")
        self.f.write(struct.pack("<Q", len(raw)) + raw)

    def write(self, name: str, array: np.ndarray):
        want_name, want_shape = self.expect.pop(0)
        if name != want_name or tuple(array.shape) != tuple(want_shape):
            raise ValueError(f"ShardWriter: got {name!r} {tuple(array.shape)}, expected {want_name!r} {want_shape}")
        array = np.ascontiguousarray(array.astype(self.dtype, copy=False))
        self.f.write(array.reshape(-1).view(np.uint8).data)

    def close(self):
        if self.expect:
            raise ValueError(f"ShardWriter: closed before tensor {self.expect[0][0]!r} was written")
        self.f.close()


def hf_parse_size(size) -> int:
    """"5GB" -> 5 * 10**9 bytes (decimal units as transformers uses; GiB/MiB are binary)."""
    if isinstance(size, (int, np.integer)) and size > 0:
        return int(size)
    s = str(size).strip().upper()
    if s.isdigit() and int(s) > 0:  # "300000": bytes, as an int is
        return int(s)
    for unit, mult in (("GIB", 2**30), ("MIB", 2**20), ("KIB", 2**10), ("GB", 10**9), ("MB", 10**6),
                       ("KB", 10**3), ("B", 1)):
        if s.endswith(unit):
            try:
                value = int(float(s[:-len(unit)]) * mult)
            except ValueError:
                break
            if value > 0:
                return value
            break
    raise ValueError(f"max_shard_size={size!r}: expected a positive byte count or a string like '5GB'")
