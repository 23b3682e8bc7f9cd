"""Hugging Face / PyTorch checkpoint layout <-> our parameter tree (facts section 2).

PyTorch Linear weights are [out, in]; ours are einsum kernels [in, ..., out] with the
head axes split out (q_proj: [d_model, n_heads, head_dim]). The mapping below is the
one place that knows both layouts; loading and saving go through it tensor by tensor.

Safetensors files are read and written here directly (8-byte little-endian header
length, JSON header, raw bytes): the `safetensors` numpy backend cannot handle
bfloat16, and its writer wants every tensor in memory at once, while we stream one
tensor at a time. `load_pretrained` lives in `llada_jax.import_hf` and
`save_pretrained` in `llada_jax.export` (each with its command line); both are
re-exported here, the public entry points.
"""

from __future__ import annotations

import json
import os
import struct
from typing import Callable, Iterator

import numpy as np

from llada_jax.model import LLaDAConfig

PREFIX = "model.transformer."
# config.json fields that map 1:1 onto LLaDAConfig fields.
_HF_FIELDS = ("d_model", "n_heads", "n_kv_heads", "n_layers", "mlp_hidden_size", "vocab_size",
              "embedding_size", "max_sequence_length", "rope_theta", "rms_norm_eps",
              "mask_token_id", "eos_token_id", "pad_token_id", "weight_tying", "init_std")
# Published features we do not implement, with the only value we accept.
_UNSUPPORTED = {"alibi": False, "include_bias": False, "include_qkv_bias": False, "scale_logits": False,
                "block_type": "llama", "activation_type": "silu", "layer_norm_type": "rms", "rope": True,
                "input_emb_norm": False, "attention_layer_norm": False, "bias_for_layer_norm": False,
                "layer_norm_with_affine": True, "block_group_size": 1, "clip_qkv": None}
# Remaining fields of the published config.json, written as published so the published
# modeling code (which fills absent fields with non-LLaDA defaults) builds the same model.
_PUBLISHED_EXTRA = dict(
    model_type="llada", architectures=["LLaDAModelLM"], mlp_ratio=4, flash_attention=False,
    attention_dropout=0.0, residual_dropout=0.0, embedding_dropout=0.0, multi_query_attention=None,
    rope_full_precision=True, use_cache=False, alibi_bias_max=8.0, attention_layer_norm_with_affine=True,
    init_cutoff_factor=None, init_device="meta", init_fn="mitchell", precision="amp_bf16")
# Our PyTorch module, copied into every export so AutoModel(trust_remote_code=True) works.
MODELING_FILE = "modeling_llada.py"
AUTO_MAP = {"AutoConfig": "modeling_llada.LLaDAConfig", "AutoModel": "modeling_llada.LLaDAModelLM",
            "AutoModelForCausalLM": "modeling_llada.LLaDAModelLM"}


# config.json fields without a safe default: LLaDAConfig's defaults are the 8B model's, so
# a missing one would silently build another model. The rest have published fallbacks.
REQUIRED_FIELDS = ("d_model", "n_heads", "n_layers", "vocab_size", "max_sequence_length", "rope_theta",
                   "rms_norm_eps", "mask_token_id", "eos_token_id")


def read_config(path: str) -> dict:
    """The parsed config.json of Hugging Face directory `path` (ValueError naming the file)."""
    file = os.path.join(path, "config.json")
    if not os.path.isfile(file):
        raise FileNotFoundError(f"{path}: no config.json; expected a Hugging Face model directory")
    try:
        with open(file) as f:
            out = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{file}: not valid JSON ({e})") from None
    if not isinstance(out, dict):
        raise ValueError(f"{file}: expected a JSON object, got {type(out).__name__}")
    return out


def config_from_hf(hf: dict, **overrides) -> LLaDAConfig:
    """LLaDAConfig from a parsed config.json; unsupported features and missing fields
    (REQUIRED_FIELDS, unless given in `overrides`) raise ValueError."""
    missing = [k for k in REQUIRED_FIELDS if hf.get(k) is None and k not in overrides]
    if missing:
        raise ValueError(f"config.json is missing {', '.join(missing)}: expected every one of "
                         f"{', '.join(REQUIRED_FIELDS)} (no default is safe: the defaults are LLaDA-8B's)")
    for key, want in _UNSUPPORTED.items():
        value = hf.get(key)
        if value is not None and value != want:
            raise ValueError(f"config.json: {key}={value!r} is not supported (expected {want!r})")
    kw = {k: hf[k] for k in _HF_FIELDS if k in hf and hf[k] is not None}
    if hf.get("multi_query_attention"):  # published rule: MQA means one key/value head
        if kw.get("n_kv_heads", 1) != 1:
            raise ValueError(f"config.json: multi_query_attention=true needs n_kv_heads=1, got {kw['n_kv_heads']}")
        kw["n_kv_heads"] = 1
    if "n_kv_heads" not in kw and "n_heads" in kw:
        kw["n_kv_heads"] = kw["n_heads"]
    if "mlp_hidden_size" not in kw and "d_model" in kw:
        kw["mlp_hidden_size"] = hf.get("mlp_ratio", 4) * kw["d_model"]
    if "embedding_size" not in kw and "vocab_size" in kw:
        kw["embedding_size"] = kw["vocab_size"]
    kw.update(overrides)
    return LLaDAConfig(**kw)


def config_to_hf(config: LLaDAConfig, torch_dtype: str = "bfloat16") -> dict:
    """config.json content with the official field names and values."""
    out = {k: getattr(config, k) for k in _HF_FIELDS}
    out.update(_UNSUPPORTED)
    out.update(_PUBLISHED_EXTRA, torch_dtype=torch_dtype, auto_map=dict(AUTO_MAP))
    return out


def _t(w):
    """Transpose of a 2-D weight, C-contiguous for large numpy arrays: numpy's plain
    transposed copy of the 8B vocabulary head takes 13 s (cache misses); copying 512x512
    tiles of the raw bits (uints of the same width: no slow ml_dtypes copy) about 2 s."""
    if not isinstance(w, np.ndarray) or w.size < 2**20 or w.ndim != 2:
        return w.T
    src = w.view(f"u{w.dtype.itemsize}")
    out = np.empty(src.shape[::-1], src.dtype)
    tile = 512
    for i in range(0, src.shape[0], tile):
        for j in range(0, src.shape[1], tile):
            out[j:j + tile, i:i + tile] = src[i:i + tile, j:j + tile].T
    return out.view(w.dtype)


# name inside a block -> (to_torch(ours) -> [out, in] array, from_torch(theirs) -> ours)
def _block_maps(c: LLaDAConfig) -> dict[str, tuple[Callable, Callable]]:
    e, h, k, d = c.d_model, c.n_heads, c.n_kv_heads, c.head_dim
    ident = (lambda w: w, lambda w: w)
    transpose = (_t, _t)
    return {
        "attn_norm": ident,
        "q_proj": (lambda w: _t(w.reshape(e, h * d)), lambda w: _t(w).reshape(e, h, d)),
        "k_proj": (lambda w: _t(w.reshape(e, k * d)), lambda w: _t(w).reshape(e, k, d)),
        "v_proj": (lambda w: _t(w.reshape(e, k * d)), lambda w: _t(w).reshape(e, k, d)),
        "attn_out": (lambda w: _t(w.reshape(h * d, e)), lambda w: _t(w).reshape(h, d, e)),
        "ff_norm": ident,
        "ff_proj": transpose,
        "up_proj": transpose,
        "ff_out": transpose,
    }


def _expected_shapes(c: LLaDAConfig) -> dict[str, tuple]:
    e, hd, kd, m = c.d_model, c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim, c.mlp_hidden_size
    block = {"attn_norm": (e,), "q_proj": (hd, e), "k_proj": (kd, e), "v_proj": (kd, e),
             "attn_out": (e, hd), "ff_norm": (e,), "ff_proj": (m, e), "up_proj": (m, e), "ff_out": (e, m)}
    shapes = {PREFIX + "wte.weight": (c.embedding_size, e)}
    for i in range(c.n_layers):
        for name, shape in block.items():
            shapes[f"{PREFIX}blocks.{i}.{name}.weight"] = shape
    shapes[PREFIX + "ln_f.weight"] = (e,)
    if not c.weight_tying:
        shapes[PREFIX + "ff_out.weight"] = (c.embedding_size, e)
    return shapes


def hf_key_list(config: LLaDAConfig) -> list[str]:
    """Every tensor name of the published layout for this config, in a stable order."""
    return list(_expected_shapes(config))


def _leaf(params, path):
    for p in path:
        try:
            params = params[p]
        except (KeyError, TypeError, IndexError):
            raise ValueError(f"params has no entry {'/'.join(path)!r} (stopped at {p!r})") from None
    return params


def _block_path(config, i, name):
    """(path to the leaf, index along the stacked layer axis or None)."""
    leaf = (name, "scale") if name.endswith("norm") else (name,)
    if config.scan_layers:
        return ("blocks",) + leaf, i
    return (f"blocks_{i}",) + leaf, None


def _ours_to_hf_name(config: LLaDAConfig) -> Iterator[tuple[str, tuple, int | None, Callable, Callable]]:
    """(hf name, our path, layer index or None, to_torch, from_torch) for every tensor."""
    ident = lambda w: w
    yield PREFIX + "wte.weight", ("wte",), None, ident, ident
    maps = _block_maps(config)
    for i in range(config.n_layers):
        for name, (to_t, from_t) in maps.items():
            path, idx = _block_path(config, i, name)
            yield f"{PREFIX}blocks.{i}.{name}.weight", path, idx, to_t, from_t
    yield PREFIX + "ln_f.weight", ("ln_f", "scale"), None, ident, ident
    if not config.weight_tying:
        yield PREFIX + "ff_out.weight", ("ff_out",), None, _t, _t


def our_shapes(config: LLaDAConfig) -> dict[tuple, tuple]:
    """Our leaf path -> shape (with the stacked layer axis when scan_layers)."""
    expected = _expected_shapes(config)
    out = {}
    for name, path, idx, _, from_t in _ours_to_hf_name(config):
        shape = from_t(np.empty(expected[name], np.int8)).shape  # shapes only: int8 keeps it cheap
        out[path] = ((config.n_layers,) + shape) if idx is not None else shape
    return out


def check_params(config: LLaDAConfig, params) -> None:
    """ValueError naming the first leaf that is missing, unexpected or of the wrong shape."""
    import jax

    want = our_shapes(config)
    have = {tuple(getattr(k, "key", k) for k in path): leaf
            for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]}
    for path, shape in want.items():
        if path not in have:
            raise ValueError(f"params is missing {'/'.join(path)!r} (expected shape {shape})")
        if tuple(have[path].shape) != shape:
            raise ValueError(f"params {'/'.join(path)!r} has shape {tuple(have[path].shape)}, expected {shape}")
    extra = sorted(set(have) - set(want))
    if extra:
        raise ValueError(f"params has unexpected entry {'/'.join(map(str, extra[0]))!r} "
                         f"({len(extra)} unexpected in all) for this config")


def params_to_hf(config: LLaDAConfig, params) -> Iterator[tuple[str, np.ndarray]]:
    """Yield (hf name, [out, in] numpy array) one tensor at a time."""
    for name, path, idx, to_t, _ in _ours_to_hf_name(config):
        w = _leaf(params, path)
        if idx is not None:
            w = w[idx]
        yield name, np.ascontiguousarray(to_t(np.asarray(w)))


def check_hf_keys(config: LLaDAConfig, shapes: dict[str, tuple]) -> None:
    """ValueError naming the first missing / unexpected key or wrong shape (before any data is read)."""
    expected = _expected_shapes(config)
    missing = [k for k in expected if k not in shapes]
    unexpected = sorted(set(shapes) - set(expected))
    tying = f"config.json has weight_tying={str(config.weight_tying).lower()}"
    if missing:
        why = f"; {tying}, so an output head is expected" if missing[0] == PREFIX + "ff_out.weight" else ""
        raise ValueError(f"checkpoint is missing {len(missing)} tensors, first {missing[0]!r} "
                         f"(expected shape {expected[missing[0]]}){why}")
    if unexpected:
        why = f"; {tying}, so no separate output head" if unexpected[0] == PREFIX + "ff_out.weight" else ""
        raise ValueError(f"checkpoint has unexpected tensor {unexpected[0]!r} "
                         f"({len(unexpected)} unexpected in all){why}")
    for name, shape in expected.items():
        if tuple(shapes[name]) != shape:
            raise ValueError(f"tensor {name!r} has shape {tuple(shapes[name])}, expected {shape}")


def params_from_hf(config: LLaDAConfig, get_tensor: Callable[[str], np.ndarray], names, dtype=None):
    """Build our (numpy) parameter tree from published tensors, checking every key and shape."""
    expected = _expected_shapes(config)
    check_hf_keys(config, {n: expected.get(n, ()) for n in names})
    params: dict = {}
    for name, path, idx, _, from_t in _ours_to_hf_name(config):
        w = get_tensor(name)
        if tuple(w.shape) != expected[name]:
            raise ValueError(f"tensor {name!r} has shape {tuple(w.shape)}, expected {expected[name]}")
        w = from_t(np.asarray(w))
        if dtype is not None:
            w = w.astype(dtype)
        node = params
        for p in path[:-1]:
            node = node.setdefault(p, {})
        if idx is None:
            node[path[-1]] = w
        else:  # stacked layer axis: allocate once, fill layer by layer
            if path[-1] not in node:
                node[path[-1]] = np.empty((config.n_layers,) + w.shape, w.dtype)
            node[path[-1]][idx] = w
    return params



# ---------------------------------------------------------------- safetensors, raw
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
            root = os.path.realpath(path)
            for fname in files:
                inside = os.path.realpath(os.path.join(path, str(fname)))
                if not isinstance(fname, str) or os.path.isabs(fname) or os.path.commonpath([inside, root]) != root:
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


def load_pretrained(path: str, **kwargs):
    """(LLaDAConfig, params); see `llada_jax.import_hf.load_pretrained`."""
    from llada_jax.interop.import_hf import load_pretrained as load
    return load(path, **kwargs)


def save_pretrained(config: LLaDAConfig, params, path: str, **kwargs):
    """Write an HF directory; see `llada_jax.export.save_pretrained`."""
    from llada_jax.interop.export import save_pretrained as save
    return save(config, params, path, **kwargs)
