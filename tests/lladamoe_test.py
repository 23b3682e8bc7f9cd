"""The LLaDA-MoE-7B-A1B family: logits equal the published modeling file's (golden files of
tests/data/make_lladamoe_golden.py), the export gives back the published tensors and loads with
its shipped modeling file, LoRA trains it and its adapters load with PEFT, and a bad config.json
names the file, the field and what was expected."""

import json
import pathlib
import shutil
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file

from llada_jax.checkpoint.load import merge_lora
from llada_jax.interop import export, hf, peft_base
from llada_jax.model import build
from llada_jax.model.adapters import lora

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from train_helper import finetune  # noqa: E402


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


def _automodel_logits(path, ids, mask, peft_dir=None):
    """float32 logits of `AutoModel.from_pretrained(path, trust_remote_code=True)` (plus PEFT)."""
    import torch
    import transformers

    net = transformers.AutoModel.from_pretrained(path, trust_remote_code=True, dtype=torch.float32)
    if peft_dir is not None:
        from peft import PeftModel

        net = PeftModel.from_pretrained(net, peft_dir)
    with torch.no_grad():
        return net(input_ids=torch.from_numpy(np.asarray(ids)).long(),
                   attention_mask=torch.from_numpy(np.asarray(mask)).long()).logits.numpy(), net


def test_export_ships_its_modeling_file_and_automodel_gives_our_logits(loaded, golden_dir, tmp_path):
    cfg, params = loaded
    g = np.load(golden_dir / "lladamoe-tiny-logits.npz")
    out = tmp_path / "lladamoe-export"
    hf.save_pretrained(cfg, params, str(out), dtype="float32")
    assert json.load(open(out / "config.json"))["auto_map"]["AutoModel"] == "modeling_lladamoe.LLaDAMoEModelLM"
    theirs, net = _automodel_logits(str(out), g["input_ids"], g["attention_mask"])
    assert type(net).__name__ == "LLaDAMoEModelLM"
    ours = np.asarray(build(cfg).apply({"params": params}, jnp.asarray(g["input_ids"]),
                                       attention_mask=jnp.asarray(g["attention_mask"])))
    real = g["attention_mask"].astype(bool)
    assert float(np.abs(theirs - ours)[real].max()) <= 1e-4


@pytest.fixture(scope="module")
def lora_trained(loaded):
    """(config with LoRA rank 4, trained params, base params, losses): 8 SFT steps."""
    cfg, params = loaded
    params = jax.tree_util.tree_map(lambda x: np.asarray(x, np.float32), params)
    before, after, trained = finetune(cfg, params, rank=4, lr=3e-2, steps=8)
    return cfg.replace(lora=lora.LoRAConfig(rank=4, alpha=8.0)), trained, params, (before, after)


def test_lora_trains_the_attention_and_dense_mlp_adapters_base_frozen(lora_trained):
    cfg, trained, base, (before, after) = lora_trained
    assert after < before - 0.1, (before, after)
    adapters, frozen = lora.split(trained)
    # attention adapters in both stacks; the dense MLP's only in the dense first layer
    assert set(adapters) == {"dense_blocks", "blocks"} and "moe" not in adapters["blocks"]
    assert {k[:-7] for k in adapters["dense_blocks"]} == set(lora.TARGETS)
    assert {k[:-7] for k in adapters["blocks"]} == {"q_proj", "k_proj", "v_proj", "attn_out"}
    flat = lambda t: dict(jax.tree_util.tree_leaves_with_path(t))  # noqa: E731
    want = flat(base)
    for path, leaf in flat(frozen).items():
        np.testing.assert_array_equal(np.asarray(leaf), want[path], err_msg=jax.tree_util.keystr(path))


def test_peft_export_follows_the_published_names_and_gives_the_merged_logits(lora_trained, golden_dir, tmp_path):
    cfg, trained, base, _ = lora_trained
    g = np.load(golden_dir / "lladamoe-tiny-logits.npz")
    out = {n: str(tmp_path / f"lladamoe-{n}") for n in ("base", "merged", "peft")}
    hf.save_pretrained(cfg.replace(lora=lora.LoRAConfig()), base, out["base"], dtype="float32")
    hf.save_pretrained(*merge_lora(cfg, trained, dtype="float32"), out["merged"], dtype="float32")
    export.save_peft(cfg, trained, out["peft"], base_model=out["base"])
    peft_base.check_weights(cfg, trained, out["base"], None, export.gatherer(np.float32))
    adapter = json.load(open(tmp_path / "lladamoe-peft" / "adapter_config.json"))
    assert adapter["target_modules"].startswith(r"model\.layers\.\d+\.(self_attn\.q_proj|")
    merged, _ = _automodel_logits(out["merged"], g["input_ids"], g["attention_mask"])
    peft_logits, net = _automodel_logits(out["base"], g["input_ids"], g["attention_mask"], out["peft"])
    adapted = sorted(n.split("model.layers.")[1][:-len(".lora_A")] for n, _ in net.named_modules()
                     if n.endswith(".lora_A"))
    attn = [f"self_attn.{p}_proj" for p in "qkvo"]
    assert adapted == sorted([f"0.{m}" for m in attn + [f"mlp.{p}_proj" for p in ("gate", "up", "down")]]
                             + [f"{i}.{m}" for i in (1, 2) for m in attn])
    unmerged = np.asarray(build(cfg).apply({"params": trained}, jnp.asarray(g["input_ids"]),
                                           attention_mask=jnp.asarray(g["attention_mask"])))
    plain, _ = _automodel_logits(out["base"], g["input_ids"], g["attention_mask"])
    real = g["attention_mask"].astype(bool)
    assert np.abs(unmerged - plain)[real].max() > 1e-1  # the adapters matter
    np.testing.assert_allclose(merged[real], unmerged[real], atol=1e-4, rtol=0)
    np.testing.assert_allclose(peft_logits[real], merged[real], atol=1e-5, rtol=0)
    print("lladamoe PEFT vs merged export, max |diff|:", np.abs(peft_logits - merged)[real].max(),
          "adapters' effect:", np.abs(unmerged - plain)[real].max())


def test_modeling_file_refuses_what_it_does_not_implement():
    from llada_jax.interop import torch_families

    tiny = dict(vocab_size=32, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                num_experts=4, num_experts_per_tok=2, expert_intermediate_size=8, dense_intermediate_size=8)
    with pytest.raises(ValueError, match=r"moe_layer_freq=\[1, 2\]: expected 2 entries of 0 \(dense\) or 1"):
        torch_families.LLaDAMoEModelLM(torch_families.LLaDAMoEConfig(**tiny, moe_layer_freq=[1, 2]))
    with pytest.raises(ValueError, match=r"rope_type='linear' is not supported by this modeling file"):
        torch_families.LLaDAMoEModelLM(torch_families.LLaDAMoEConfig(**tiny, rope_scaling={"rope_type": "linear", "factor": 2.0}))
    assert isinstance(torch_families.LLaDAMoEModelLM(torch_families.LLaDAMoEConfig(**tiny, moe_layer_freq=[0, 1])).model.layers[0].mlp, torch_families.MLP)
