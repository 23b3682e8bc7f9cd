"""Hugging Face / PyTorch checkpoint layout <-> our parameter tree (facts section 2).

PyTorch Linear weights are [out, in]; ours are einsum kernels [in, ..., out] with the
head axes split out (q_proj: [d_model, n_heads, head_dim]). The mapping below is the
one place that knows both layouts; loading and saving go through it tensor by tensor.
"""

from __future__ import annotations

import json
import os
from typing import Callable, Iterator

import numpy as np

from llada_jax.model import LLaDAConfig

PREFIX = "model.transformer."
# config.json fields that map 1:1 onto LLaDAConfig fields.
_HF_FIELDS = ("d_model", "n_heads", "n_kv_heads", "n_layers", "mlp_hidden_size", "vocab_size",
              "embedding_size", "max_sequence_length", "rope_theta", "rms_norm_eps",
              "mask_token_id", "eos_token_id", "pad_token_id", "weight_tying", "init_std")
# Published features we do not implement, with the value we need.
_UNSUPPORTED = {"alibi": False, "include_bias": False, "include_qkv_bias": False, "scale_logits": False,
                "block_type": "llama", "activation_type": "silu", "layer_norm_type": "rms", "rope": True,
                "input_emb_norm": False, "attention_layer_norm": False}


def config_from_hf(hf: dict, **overrides) -> LLaDAConfig:
    """LLaDAConfig from a parsed config.json; unsupported features raise ValueError."""
    for key, want in _UNSUPPORTED.items():
        if key in hf and hf[key] is not None and hf[key] != want:
            raise ValueError(f"config.json: {key}={hf[key]!r} is not supported (expected {want!r})")
    kw = {k: hf[k] for k in _HF_FIELDS if k in hf and hf[k] is not None}
    if "n_kv_heads" not in kw and "n_heads" in kw:
        kw["n_kv_heads"] = kw["n_heads"]
    if "embedding_size" not in kw and "vocab_size" in kw:
        kw["embedding_size"] = kw["vocab_size"]
    kw.update(overrides)
    return LLaDAConfig(**kw)


def config_to_hf(config: LLaDAConfig, torch_dtype: str = "bfloat16") -> dict:
    """config.json content with the official field names and values."""
    out = {k: getattr(config, k) for k in _HF_FIELDS}
    out.update(_UNSUPPORTED)
    out.update(model_type="llada", architectures=["LLaDAModelLM"], mlp_ratio=4, flash_attention=False,
               attention_dropout=0.0, residual_dropout=0.0, embedding_dropout=0.0,
               multi_query_attention=None, rope_full_precision=True, torch_dtype=torch_dtype,
               use_cache=False)
    return out


# name inside a block -> (to_torch(ours) -> [out, in] array, from_torch(theirs) -> ours)
def _block_maps(c: LLaDAConfig) -> dict[str, tuple[Callable, Callable]]:
    e, h, k, d, m = c.d_model, c.n_heads, c.n_kv_heads, c.head_dim, c.mlp_hidden_size
    ident = (lambda w: w, lambda w: w)
    return {
        "attn_norm": ident,
        "q_proj": (lambda w: w.reshape(e, h * d).T, lambda w: w.T.reshape(e, h, d)),
        "k_proj": (lambda w: w.reshape(e, k * d).T, lambda w: w.T.reshape(e, k, d)),
        "v_proj": (lambda w: w.reshape(e, k * d).T, lambda w: w.T.reshape(e, k, d)),
        "attn_out": (lambda w: w.reshape(h * d, e).T, lambda w: w.T.reshape(h, d, e)),
        "ff_norm": ident,
        "ff_proj": (lambda w: w.T, lambda w: w.T),
        "up_proj": (lambda w: w.T, lambda w: w.T),
        "ff_out": (lambda w: w.T, lambda w: w.T),
    }


def _expected_shapes(c: LLaDAConfig) -> dict[str, tuple]:
    e, hd, kd, m = c.d_model, c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim, c.mlp_hidden_size
    block = {"attn_norm": (e,), "q_proj": (hd, e), "k_proj": (kd, e), "v_proj": (kd, e),
             "attn_out": (e, hd), "ff_norm": (e,), "ff_proj": (m, e), "up_proj": (m, e), "ff_out": (e, m)}
    shapes = {PREFIX + "wte.weight": (c.embedding_size, e), PREFIX + "ln_f.weight": (e,)}
    if not c.weight_tying:
        shapes[PREFIX + "ff_out.weight"] = (c.embedding_size, e)
    for i in range(c.n_layers):
        for name, shape in block.items():
            shapes[f"{PREFIX}blocks.{i}.{name}.weight"] = shape
    return shapes


def hf_key_list(config: LLaDAConfig) -> list[str]:
    """Every tensor name of the published layout for this config, in a stable order."""
    return list(_expected_shapes(config))


def _leaf(params, path):
    for p in path:
        params = params[p]
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
    transpose = lambda w: w.T
    yield PREFIX + "wte.weight", ("wte",), None, ident, ident
    maps = _block_maps(config)
    for i in range(config.n_layers):
        for name, (to_t, from_t) in maps.items():
            path, idx = _block_path(config, i, name)
            yield f"{PREFIX}blocks.{i}.{name}.weight", path, idx, to_t, from_t
    yield PREFIX + "ln_f.weight", ("ln_f", "scale"), None, ident, ident
    if not config.weight_tying:
        yield PREFIX + "ff_out.weight", ("ff_out",), None, transpose, transpose


def params_to_hf(config: LLaDAConfig, params) -> Iterator[tuple[str, np.ndarray]]:
    """Yield (hf name, [out, in] numpy array) one tensor at a time."""
    for name, path, idx, to_t, _ in _ours_to_hf_name(config):
        w = _leaf(params, path)
        if idx is not None:
            w = w[idx]
        yield name, np.ascontiguousarray(to_t(np.asarray(w)))


def params_from_hf(config: LLaDAConfig, get_tensor: Callable[[str], np.ndarray], names, dtype=None):
    """Build our (numpy) parameter tree from published tensors, checking every key and shape."""
    expected = _expected_shapes(config)
    names = set(names)
    missing = [k for k in expected if k not in names]
    unexpected = sorted(names - set(expected))
    if missing:
        raise ValueError(f"checkpoint is missing {len(missing)} tensors, first {missing[0]!r}")
    if unexpected:
        raise ValueError(f"checkpoint has unexpected tensor {unexpected[0]!r} "
                         f"({len(unexpected)} unexpected in all)")
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


def _safetensor_files(path: str) -> list[str]:
    index = os.path.join(path, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            weight_map = json.load(f)["weight_map"]
        return sorted(set(weight_map.values()))
    single = os.path.join(path, "model.safetensors")
    if os.path.exists(single):
        return ["model.safetensors"]
    raise FileNotFoundError(f"{path}: expected model.safetensors or model.safetensors.index.json")


def load_pretrained(path: str, *, dtype=None, **config_overrides):
    """(LLaDAConfig, numpy params) from a local Hugging Face directory."""
    from safetensors import safe_open

    with open(os.path.join(path, "config.json")) as f:
        config = config_from_hf(json.load(f), **config_overrides)
    handles = {}
    names = {}
    for fname in _safetensor_files(path):
        handles[fname] = safe_open(os.path.join(path, fname), framework="numpy")
        for key in handles[fname].keys():
            names[key] = fname
    params = params_from_hf(config, lambda k: handles[names[k]].get_tensor(k), names, dtype=dtype)
    return config, params
