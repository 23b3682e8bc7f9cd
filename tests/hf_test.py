"""Import of checkpoints in the published layout, its errors, and the
full LLaDA-8B shapes."""

import copy
import json
import os
import struct

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from llada_jax.interop import hf, layout
from llada_jax.model import LLaDA, LLaDAConfig
from llada_jax.interop.torch_model import Args, LLaDATorch

CONFIG_JSON = dict(d_model=64, n_heads=4, n_kv_heads=2, n_layers=2, mlp_hidden_size=96, vocab_size=300,
                   embedding_size=320, max_sequence_length=256, rope_theta=10000.0, rms_norm_eps=1e-5,
                   mask_token_id=299, eos_token_id=298, pad_token_id=298, weight_tying=False,
                   model_type="llada", block_type="llama", alibi=False, include_bias=False,
                   torch_dtype="bfloat16")
IDS = np.array([[1, 299, 5, 77, 299, 310, 2, 298]], np.int32)


def published_names(n_layers, weight_tying=False):
    """The published checkpoint's key list, written out independently of llada_jax.interop.hf."""
    p = "model.transformer."
    names = [p + "wte.weight"]
    for i in range(n_layers):
        names += [f"{p}blocks.{i}.{n}.weight" for n in ("attn_norm", "q_proj", "k_proj", "v_proj", "attn_out",
                                                         "ff_norm", "ff_proj", "up_proj", "ff_out")]
    return names + [p + "ln_f.weight"] + ([] if weight_tying else [p + "ff_out.weight"])


def write_published(path, state, config=CONFIG_JSON, split=True):
    """A checkpoint as the published tools write it: torch bf16 tensors, safetensors shards
    written by the safetensors library itself, and the index."""
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config, f)
    names = sorted(state)
    groups = [names[: len(names) // 2], names[len(names) // 2:]] if split else [names]
    weight_map = {}
    for k, group in enumerate(groups):
        fname = f"model-{k + 1:05d}-of-{len(groups):05d}.safetensors" if split else "model.safetensors"
        save_file({n: state[n].contiguous() for n in group}, os.path.join(path, fname), metadata={"format": "pt"})
        weight_map.update({n: fname for n in group})
    if split:
        with open(os.path.join(path, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": 0}, "weight_map": weight_map}, f)


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """(dir, torch bf16 module) of a random model in the published layout."""
    torch.manual_seed(0)
    net = LLaDATorch(Args.from_config(CONFIG_JSON))
    with torch.no_grad():
        for name, p in net.named_parameters():  # norms away from 1, so a swapped norm is visible
            p.copy_(torch.randn_like(p) * (0.3 if p.ndim == 1 else 0.15) + (1.0 if p.ndim == 1 else 0.0))
    net = net.to(torch.bfloat16)
    path = str(tmp_path_factory.mktemp("published"))
    write_published(path, net.state_dict())
    return path, net


def test_torch_module_has_published_names(published):
    assert sorted(published[1].state_dict()) == sorted(published_names(2))


def test_import_published_layout(published):
    path, net = published
    assert len([f for f in os.listdir(path) if f.endswith(".safetensors")]) == 2
    config, params = hf.load_pretrained(path)
    assert (config.embedding_size, config.mlp_hidden_size, config.param_dtype) == (320, 96, "bfloat16")
    # [out, in] -> [in, heads, head_dim]: query head 3, dim 5 is row 3*16+5 of the torch weight.
    w = net.model.transformer.blocks[1].q_proj.weight.detach().float().numpy()
    q = np.asarray(params["blocks"]["q_proj"][1].astype(jnp.float32))
    np.testing.assert_array_equal(q[:, 3, 5], w[3 * 16 + 5])
    head = net.model.transformer.ff_out.weight.detach().float().numpy()
    np.testing.assert_array_equal(np.asarray(params["ff_out"].astype(jnp.float32)), head.T)
    # The same bf16 weights computed in float32 on both sides give the same logits.
    with torch.no_grad():
        want = copy.deepcopy(net).float()(torch.from_numpy(IDS).long()).numpy()
    got = np.asarray(LLaDA(config).apply({"params": params}, IDS))
    assert np.abs(want).max() > 1.0
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def _tamper(src, dst, drop=(), add=None, reshape=None, config=None):
    state = {}
    for f in os.listdir(src):
        if f.endswith(".safetensors"):
            from safetensors.torch import load_file
            state.update(load_file(os.path.join(src, f)))
    for k in drop:
        del state[k]
    if add:
        state.update(add)
    if reshape:
        state[reshape] = state[reshape][:-1]
    write_published(dst, state, config=config or CONFIG_JSON, split=False)
    return dst


def test_import_errors_name_the_key(published, tmp_path):
    src, p = published[0], "model.transformer."
    with pytest.raises(ValueError, match=rf"missing 1 tensors, first '{p}blocks.1.up_proj.weight'"):
        hf.load_pretrained(_tamper(src, tmp_path / "a", drop=[f"{p}blocks.1.up_proj.weight"]))
    with pytest.raises(ValueError, match=rf"unexpected tensor '{p}blocks.0.q_proj.bias'"):
        hf.load_pretrained(_tamper(src, tmp_path / "b", add={f"{p}blocks.0.q_proj.bias": torch.zeros(64)}))
    with pytest.raises(ValueError, match=rf"'{p}blocks.0.k_proj.weight' has shape \(31, 64\), expected \(32, 64\)"):
        hf.load_pretrained(_tamper(src, tmp_path / "c", reshape=f"{p}blocks.0.k_proj.weight"))
    # Weight tying mismatch, both ways.
    tied = dict(CONFIG_JSON, weight_tying=True)
    with pytest.raises(ValueError, match=rf"unexpected tensor '{p}ff_out.weight'.*weight_tying=true"):
        hf.load_pretrained(_tamper(src, tmp_path / "d", config=tied))
    with pytest.raises(ValueError, match=rf"missing 1 tensors, first '{p}ff_out.weight'.*weight_tying=false"):
        hf.load_pretrained(_tamper(src, tmp_path / "e", drop=[f"{p}ff_out.weight"]))


@pytest.mark.parametrize("field,value", [("alibi", True), ("include_bias", True), ("block_type", "sequential"),
                                         ("layer_norm_type", "default"), ("block_group_size", 2),
                                         ("clip_qkv", 8.0), ("include_qkv_bias", True)])
def test_unsupported_features_are_refused(field, value):
    with pytest.raises(ValueError, match=rf"{field}={value!r} is not supported \(expected"):
        hf.config_from_hf(dict(CONFIG_JSON, **{field: value}))
    if field != "clip_qkv":  # the torch module refuses the same configs
        with pytest.raises(ValueError, match=rf"{field}={value!r} is not supported"):
            Args.from_config(dict(CONFIG_JSON, **{field: value}))


def test_index_naming_a_file_without_the_tensor_is_refused(published, tmp_path):
    dst = _tamper(published[0], tmp_path / "x")
    with open(os.path.join(dst, "model.safetensors.index.json"), "w") as f:
        json.dump({"weight_map": {"model.transformer.wte.weight": "model.safetensors",
                                  "model.transformer.ln_f.weight": "other.safetensors"}}, f)
    with pytest.raises(ValueError, match="holds tensor .* but the index maps it to None|index maps"):
        hf.load_pretrained(dst)


def _sparse_safetensors(file, shapes, values):
    """A bf16 safetensors file of zeros (sparse on disk: nothing written but `values`,
    {name: (row, array)} put at that row)."""
    header, offset = {}, 0
    for name, shape in shapes.items():
        nb = 2 * int(np.prod(shape))
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + nb]}
        offset += nb
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(file, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        base = f.tell()
        f.truncate(base + offset)
        for name, (row, arr) in values.items():
            f.seek(base + header[name]["data_offsets"][0] + 2 * row * shapes[name][-1])
            f.write(np.asarray(arr, jnp.bfloat16).tobytes())


def test_two_layer_model_at_full_8b_width(tmp_path):
    """Real widths flow through import and the model: d_model 4096, 32 heads, mlp 12288,
    vocab 126464 (2 layers instead of 32; weights bf16, zero but for a few rows)."""
    cfg = LLaDAConfig.llada_8b(n_layers=2)
    shapes = dict(zip(published_names(2), [s for s in layout.expected_shapes(cfg).values()]))
    assert shapes["model.transformer.wte.weight"] == (126464, 4096)
    ones = np.ones(4096)
    _sparse_safetensors(tmp_path / "model.safetensors", shapes, {
        "model.transformer.wte.weight": (126081, 0.5 * ones),  # the embedding of EOS
        "model.transformer.ln_f.weight": (0, 2.0 * ones),
        "model.transformer.ff_out.weight": (4321, ones)})  # head row 4321 = vocab entry 4321
    with open(tmp_path / "config.json", "w") as f:
        json.dump(hf.config_to_hf(cfg), f)
    config, params = hf.load_pretrained(str(tmp_path))
    assert config.param_dtype == "bfloat16" and params["ff_out"].shape == (4096, 126464)
    assert params["blocks"]["q_proj"].shape == (2, 4096, 32, 128)
    assert params["blocks"]["ff_out"].shape == (2, 12288, 4096)
    # The rows written land where the layout says: head row 4321 is column 4321 of ours.
    head = params["ff_out"]
    assert float(head[5, 4321]) == 1.0 and float(jnp.abs(head[:, 4320]).max()) == 0.0
    assert float(params["wte"][126081, 4095]) == 0.5 and float(params["ln_f"]["scale"][17]) == 2.0
    # A real-shape forward pass, traced only (running it in bf16 on 2 CPU cores costs ~10 s).
    out = jax.eval_shape(lambda p: LLaDA(config.replace(dtype="bfloat16")).apply(
        {"params": p}, jnp.zeros((1, 4), jnp.int32)), params)
    assert out.shape == (1, 4, 126464) and out.dtype == jnp.float32


def test_full_8b_tree_maps_one_to_one_onto_the_published_keys():
    cfg = LLaDAConfig.llada_8b()
    abstract = jax.eval_shape(lambda: LLaDA(cfg).init(jax.random.key(0), jnp.zeros((1, 1), jnp.int32)))
    leaves = {tuple(k.key for k in path): x.shape
              for path, x in jax.tree_util.tree_leaves_with_path(jax.tree_util.tree_map(
                  lambda b: b.value if hasattr(b, "value") else b, abstract["params"],
                  is_leaf=lambda b: hasattr(b, "value")))}
    assert sum(int(np.prod(s)) for s in leaves.values()) == 8_015_581_184  # LLaDA-8B's published parameter count
    names = published_names(32)
    assert hf.hf_key_list(cfg) == names[:1] + names[1:-2] + names[-2:]
    e, v, m, hd = 4096, 126464, 12288, 32 * 128
    want = {"wte": (v, e), "attn_norm": (e,), "ff_norm": (e,), "ln_f": (e,), "q_proj": (hd, e), "k_proj": (hd, e),
            "v_proj": (hd, e), "attn_out": (e, hd), "ff_proj": (m, e), "up_proj": (m, e), "ff_out": (e, m)}
    used = {}
    for name, path, idx, to_t, _ in layout.tensor_map(cfg):
        shape = leaves[path] if idx is None else leaves[path][1:]
        out = jax.eval_shape(to_t, jax.ShapeDtypeStruct(shape, jnp.float32)).shape
        short = name.split(".")[-2]
        expect = (v, e) if name == "model.transformer.ff_out.weight" else want[short]
        assert out == expect, name
        used[path] = used.get(path, 0) + 1
    assert set(used) == set(leaves)  # every leaf exported, each published key produced once
    assert all(n == (32 if path[0] == "blocks" else 1) for path, n in used.items())
