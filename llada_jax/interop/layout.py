"""Hugging Face / PyTorch checkpoint layout <-> our parameter tree (the published checkpoint's key names and [out, in] orientation).

PyTorch Linear weights are [out, in]; ours are einsum kernels [in, ..., out] with the
head axes split out (q_proj: [d_model, n_heads, head_dim]). The mapping below is the
one place that knows both layouts; loading and saving go through it tensor by tensor.

The files of an HF directory (config.json, tokenizer files, the modeling file) are
named here too; import (`import_hf`) and export (`export`) both use this module, and the
safetensors io is in `safetensors_io`.
"""

from __future__ import annotations

import json
import os
from typing import Callable, Iterator

import numpy as np

from llada_jax.model import LLaDAConfig, families, rope

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
# Architecture fields of other models that LLaDA's config.json never sets: with a value,
# reading the file as LLaDA would build another model than it describes (not exported).
_ABSENT = {"rope_scaling": None, "sliding_window": None, "use_sliding_window": False, "attention_bias": False,
           "partial_rotary_factor": 1.0}
# Remaining fields of the published config.json, written as published so the published
# modeling code (which fills absent fields with non-LLaDA defaults) builds the same model.
_PUBLISHED_EXTRA = dict(
    model_type="llada", architectures=["LLaDAModelLM"], mlp_ratio=4, flash_attention=False,
    attention_dropout=0.0, residual_dropout=0.0, embedding_dropout=0.0, multi_query_attention=None,
    rope_full_precision=True, use_cache=False, alibi_bias_max=8.0, attention_layer_norm_with_affine=True,
    init_cutoff_factor=None, init_device="meta", init_fn="mitchell", precision="amp_bf16")
# Tokenizer files an HF directory may hold: import copies them in, export writes them.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "added_tokens.json", "vocab.json", "merges.txt", "chat_template.jinja")
# Our PyTorch module, copied into every export so AutoModel(trust_remote_code=True) works.
MODELING_FILE = "modeling_llada.py"
# Dream's and LLaDA-MoE's modeling file: our PyTorch code for those families (the published
# files are not ours to ship), under the file name the family's auto_map uses.
FAMILIES_MODELING_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_families.py")
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


def check_hf_fields(hf: dict, required, unsupported: dict, *, file: str = "config.json", given=(),
                    note: str = "") -> None:
    """ValueError naming `file` and the field when a `required` field of config.json is missing
    (and not in `given`) or a field of `unsupported` holds anything but its one supported value."""
    missing = [k for k in required if hf.get(k) is None and k not in given]
    if missing:
        raise ValueError(f"{file} is missing {', '.join(missing)}: expected every one of {', '.join(required)}{note}")
    for key, want in unsupported.items():
        value = hf.get(key)
        if value is not None and value != want:
            raise ValueError(f"{file}: {key}={value!r} is not supported (expected {want!r})")


def llada_config_from_hf(hf: dict, **overrides) -> LLaDAConfig:
    """LLaDAConfig from a parsed config.json; unsupported features and missing fields
    (REQUIRED_FIELDS, unless given in `overrides`) raise ValueError."""
    check_hf_fields(hf, REQUIRED_FIELDS, {**_UNSUPPORTED, **_ABSENT}, given=overrides,
                    note=" (no default is safe: the defaults are LLaDA-8B's)")
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


def llada_config_to_hf(config: LLaDAConfig, torch_dtype: str = "bfloat16") -> dict:
    """config.json content with the official field names and values."""
    rope.require_default(config.rope_scaling, "llada")
    out = {k: getattr(config, k) for k in _HF_FIELDS}
    out.update(_UNSUPPORTED)
    out.update(_PUBLISHED_EXTRA, torch_dtype=torch_dtype, auto_map=dict(AUTO_MAP))
    return out


def _t(w):
    """Transpose of a 2-D weight, C-contiguous for large numpy arrays: numpy's plain
    transposed copy of the 8B vocabulary head takes 13 s (cache misses); copying square
    tiles of the raw bits (uints of the same width: no slow ml_dtypes copy) of 128 KiB each,
    source and destination tile in the L2 cache together, about 1 s (bf16 tiles of 512x512,
    512 KiB, took 3.1 s on a 2-core Xeon; 256x256 1.05 s)."""
    if not isinstance(w, np.ndarray) or w.size < 2**20 or w.ndim != 2:
        return w.T
    src = w.view(f"u{w.dtype.itemsize}")
    out = np.empty(src.shape[::-1], src.dtype)
    tile = 256 if w.dtype.itemsize <= 2 else 128  # tile * tile * itemsize <= 128 KiB
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


def llada_expected_shapes(c: LLaDAConfig) -> dict[str, tuple]:
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
    return list(expected_shapes(config))


def leaf(params, path):
    for p in path:
        try:
            params = params[p]
        except (KeyError, TypeError, IndexError):
            raise ValueError(f"params has no entry {'/'.join(path)!r} (stopped at {p!r})") from None
    return params


def block_path(config, i, name):
    """(path to the leaf, index along the stacked layer axis or None) of block i's weight `name`;
    None when block i has no such weight (a family with its own `block_path`: LLaDA-MoE's MoE
    layers have no dense MLP)."""
    family = families.get(config.family)
    if hasattr(family, "block_path"):
        return family.block_path(config, i, name)
    leaf = (name, "scale") if name.endswith("norm") else (name,)
    if config.scan_layers:
        return ("blocks",) + leaf, i
    return (f"blocks_{i}",) + leaf, None


def llada_tensor_map(config: LLaDAConfig) -> Iterator[tuple[str, tuple, int | None, Callable, Callable]]:
    """(hf name, our path, layer index or None, to_torch, from_torch) for every tensor."""
    ident = lambda w: w
    yield PREFIX + "wte.weight", ("wte",), None, ident, ident
    maps = _block_maps(config)
    for i in range(config.n_layers):
        for name, (to_t, from_t) in maps.items():
            path, idx = block_path(config, i, name)
            yield f"{PREFIX}blocks.{i}.{name}.weight", path, idx, to_t, from_t
    yield PREFIX + "ln_f.weight", ("ln_f", "scale"), None, ident, ident
    if not config.weight_tying:
        yield PREFIX + "ff_out.weight", ("ff_out",), None, _t, _t


def is_fused(path) -> bool:
    """True when a tensor map's `path` names several leaves, a tuple of paths (one Hugging Face
    tensor holding several of ours, e.g. LLaDA 2.x's fused query_key_value): its from_torch
    then returns one array per leaf and its to_torch takes them as a tuple, in that order."""
    return bool(path) and isinstance(path[0], tuple)


def split(path, host) -> list:
    """[(leaf path, array)] of from_torch's result `host` for a tensor map's `path`."""
    return list(zip(path, host)) if is_fused(path) else [(path, host)]


def our_shapes(config: LLaDAConfig) -> dict[tuple, tuple]:
    """Our leaf path -> shape: with the stacked axes of its index when stacked (the layer axis
    when scan_layers; MoE experts: (layer, expert), or (expert,) per unscanned layer)."""
    expected = expected_shapes(config)
    out, extent = {}, {}
    for name, fused, idx, _, from_t in tensor_map(config):
        parts = from_t(np.empty(expected[name], np.int8))  # shapes only: int8 keeps it cheap
        for path, part in split(fused, parts):
            shape = part.shape
            if idx is not None:
                ix = (idx,) if isinstance(idx, (int, np.integer)) else tuple(idx)
                extent[path] = tuple(max(a, i + 1) for a, i in zip(extent.get(path, (0,) * len(ix)), ix))
                shape = extent[path] + shape
            out[path] = shape
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



def check_hf_keys(config: LLaDAConfig, shapes: dict[str, tuple]) -> None:
    """ValueError naming the first missing / unexpected key or wrong shape (before any data is read)."""
    expected = expected_shapes(config)
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


# The family-independent entry points: each family's module (llada_jax.model.families) holds
# its layout; LLaDA's is the llada_* functions above.
def config_from_hf(hf: dict, file: str = "config.json", **overrides) -> LLaDAConfig:
    """LLaDAConfig from a parsed config.json of any family (read from model_type/architectures)."""
    family = families.family_of_hf(hf, file)
    return families.get(family).config_from_hf(hf, **overrides)


def config_to_hf(config: LLaDAConfig, torch_dtype: str = "bfloat16") -> dict:
    return families.get(config.family).config_to_hf(config, torch_dtype=torch_dtype)


def expected_shapes(config: LLaDAConfig) -> dict[str, tuple]:
    return families.get(config.family).expected_shapes(config)


def tensor_map(config: LLaDAConfig):
    return families.get(config.family).tensor_map(config)
