"""The LLaDA-MoE-7B-A1B family: logits equal the published modeling file's (golden files of
tests/data/make_lladamoe_golden.py), the export gives back the published tensors, and a bad
config.json names the file, the field and what was expected."""

import json
import shutil

import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file

from llada_jax.interop import hf
from llada_jax.model import build


@pytest.fixture(scope="module")
def loaded(golden_dir):
    return hf.load_pretrained(str(golden_dir / "lladamoe-tiny"))


def test_logits_equal_the_published_code_with_gqa_and_padding(loaded, golden_dir):
    cfg, params = loaded
    assert cfg.family == "lladamoe" and cfg.qk_norm and cfg.n_kv_heads == 2
    assert cfg.moe.first_k_dense == 1 and cfg.moe.expert_bias == "weights" and cfg.moe.shared_hidden_size == 48
    g = np.load(golden_dir / "lladamoe-tiny-logits.npz")
    out = build(cfg).apply({"params": params}, jnp.asarray(g["input_ids"]), attention_mask=jnp.asarray(g["attention_mask"]))
    assert float(np.max(np.abs(np.asarray(out) - g["logits"]))) <= 1e-4


def test_export_gives_back_the_published_tensors(loaded, golden_dir, tmp_path):
    cfg, params = loaded
    hf.save_pretrained(cfg, params, str(tmp_path / "out"), dtype="float32")
    a, b = load_file(str(golden_dir / "lladamoe-tiny/model.safetensors")), load_file(str(tmp_path / "out/model.safetensors"))
    assert set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a)
    c = json.load(open(tmp_path / "out/config.json"))
    assert c["model_type"] == "lladamoe" and c["moe_layer_freq"] == [0, 1, 1] and c["qk_layernorm"]


def test_bad_config_names_file_and_field(golden_dir, tmp_path):
    src = tmp_path / "bad"
    shutil.copytree(golden_dir / "lladamoe-tiny", src)
    c = json.load(open(src / "config.json"))
    c["moe_layer_freq"] = [1, 0, 1]
    json.dump(c, open(src / "config.json", "w"))
    with pytest.raises(ValueError, match=r"config\.json: moe_layer_freq=\[1, 0, 1\]: expected 3 entries"):
        hf.load_pretrained(str(src))
