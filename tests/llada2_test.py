"""The LLaDA 2.x family (LLaDA2.0-mini's layout): logits equal the published modeling file's with
its block-causal mask, the block-cache sampler gives the published `generate`'s tokens (golden
files of tests/data/make_llada2_golden.py), the export gives back the published tensors, and a
bad config.json names the file, the field and what was expected."""

import json
import shutil

import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file

import llada_jax
from llada_jax.interop import hf
from llada_jax.model import build


@pytest.fixture(scope="module")
def loaded(golden_dir):
    return hf.load_pretrained(str(golden_dir / "llada2-tiny"))


def test_logits_equal_the_published_code_block_causal_with_padding(loaded, golden_dir):
    cfg, params = loaded
    assert cfg.family == "llada2" and cfg.block_size == 8 and cfg.qk_norm and cfg.n_kv_heads == 2
    assert cfg.partial_rotary_factor == 0.5 and cfg.moe.first_k_dense == 1 and cfg.moe.shared_hidden_size == 24
    m = cfg.moe
    assert (m.score_function, m.expert_bias, m.n_group, m.topk_group, m.norm_topk_prob, m.routed_scaling_factor) == (
        "sigmoid", "selection", 4, 2, True, 2.5)
    g = np.load(golden_dir / "llada2-tiny-logits.npz")
    out = build(cfg).apply({"params": params}, jnp.asarray(g["input_ids"]),
                           attention_mask=jnp.asarray(g["attention_mask"]))
    real = g["attention_mask"].astype(bool)
    assert float(np.max(np.abs(np.asarray(out) - g["logits"])[real])) <= 1e-4


def test_export_gives_back_the_published_tensors(loaded, golden_dir, tmp_path):
    cfg, params = loaded
    hf.save_pretrained(cfg, params, str(tmp_path / "out"), dtype="float32")
    a, b = load_file(str(golden_dir / "llada2-tiny/model.safetensors")), load_file(str(tmp_path / "out/model.safetensors"))
    assert set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a)
    c = json.load(open(tmp_path / "out/config.json"))
    want = json.load(open(golden_dir / "llada2-tiny/config.json"))
    assert {k: c[k] for k in want} == want  # every published field, same value
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if p.suffix == ".py") == []  # no modeling file


# the published generate's cases (tests/data/llada2-tiny-generate.json): the fixed schedule,
# threshold with a prompt off the block grid, a prompt of whole blocks, minimal_topk capping the
# steps, EOS ending after its block, eos_early_stop
@pytest.mark.parametrize("case", range(7))
def test_block_cache_sampler_gives_the_published_generate_tokens(loaded, golden_dir, case):
    cfg, params = loaded
    g = json.load(open(golden_dir / "llada2-tiny-generate.json"))
    c = g["cases"][case]
    eos = c["eos_id"] if c["eos_id"] >= 0 else 126  # -1 (none): an id the published answer never holds
    assert eos not in c["output"] or c["output"].index(eos) == len(c["output"]) - 1
    out = llada_jax.generate(build(cfg), params, np.asarray([c["prompt"]]), steps=c["steps"],
                             gen_length=c["gen_length"], block_length=g["block_length"], temperature=0.0,
                             threshold=c["threshold"], minimal_topk=c.get("minimal_topk", 1),
                             eos_early_stop=c.get("eos_early_stop", False), mask_id=g["mask_id"], eos_id=eos)
    answer = np.asarray(out)[0, len(c["prompt"]):].tolist()
    answer = answer[:answer.index(eos) + 1] if eos in answer else answer
    assert answer == c["output"]


def test_import_prints_the_block_size_and_moe_flags(loaded):
    from llada_jax.interop import import_hf

    flags = import_hf.model_flags(loaded[0])
    for flag in ("family=llada2", "block_size=8", "partial_rotary_factor=0.5", "moe.num_experts=8",
                 "moe.score_function=sigmoid", "moe.expert_bias=selection", "moe.n_group=4", "moe.topk_group=2",
                 "moe.norm_topk_prob=True", "moe.routed_scaling_factor=2.5", "moe.first_k_dense=1"):
        assert f"--config.model.{flag}" in flags


def test_llada21_model_type_imports_as_the_same_family(golden_dir, tmp_path):
    src = tmp_path / "llada21"
    shutil.copytree(golden_dir / "llada2-tiny", src)
    c = json.load(open(src / "config.json"))
    c["model_type"] = "llada21_moe"  # LLaDA2.1-mini's config.json: same architecture and tensors
    json.dump(c, open(src / "config.json", "w"))
    cfg, _ = hf.load_pretrained(str(src))
    assert cfg.family == "llada2" and cfg.block_size == 8


def test_bad_config_names_file_and_field(golden_dir, tmp_path):
    src = tmp_path / "bad"
    shutil.copytree(golden_dir / "llada2-tiny", src)
    c = json.load(open(src / "config.json"))
    del c["use_bias"]  # the published default, True: a bias on attention.dense
    json.dump(c, open(src / "config.json", "w"))
    with pytest.raises(ValueError, match=r"^\S*config\.json: use_bias=True is not supported \(expected False") as e:
        hf.load_pretrained(str(src))
    assert "\n" not in str(e.value)
