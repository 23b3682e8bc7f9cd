"""Model families: the registry, import / export in each family's published layout, fp32
logits against the published code's (golden files of tests/data/make_families_golden.py),
Dream's sampler token for token, and bad input."""

import json
import re
import shutil

import numpy as np
import pytest

import jax
import jax.numpy as jnp

import llada_jax
from llada_jax.interop import export, hf, import_hf, safetensors_io
from llada_jax.model import LLaDAConfig, families
from llada_jax.model.rope import RopeScaling
from llada_jax.sampling import dream

FAMILIES = ("llama", "qwen2", "qwen3", "dream", "llama3")  # the golden models (tests/data/F-tiny)
FAMILY = {"llama3": "llama"}  # llama3: Llama with Llama 3.1's RoPE rescaling
# What each tiny golden model exercises: its family's knobs and the config.json form read.
KNOBS = {"llama": dict(causal=True, qkv_bias=False, qk_norm=False, weight_tying=False),
         "llama3": dict(causal=True, rope_scaling=RopeScaling("llama3", 8.0, 1.0, 4.0, 16)),
         "qwen2": dict(causal=True, qkv_bias=True, qk_norm=False, weight_tying=True),
         "qwen3": dict(causal=True, qkv_bias=False, qk_norm=True, attention_head_dim=32),
         "dream": dict(causal=False, qkv_bias=True, qk_norm=False, mask_token_id=95)}


@pytest.fixture(scope="module")
def loaded(golden_dir):
    # Unstacked layers: the import then places each tensor as it is (no per-shape setter compiles).
    return {f: hf.load_pretrained(str(golden_dir / f"{f}-tiny"), dtype="float32", scan_layers=False)
            for f in FAMILIES}


def test_registry_builds_every_family_and_validates_its_config():
    assert {FAMILY.get(f, f) for f in FAMILIES} | {"llada"} <= set(families.FAMILIES)
    for name in families.FAMILIES:
        assert families.get(name).SAMPLER in ("llada", "dream")
        assert isinstance(llada_jax.build(LLaDAConfig.tiny(family=name)), llada_jax.LLaDA)
    with pytest.raises(ValueError, match=r"LLaDAConfig.family='gpt2': expected one of \['dream', "):
        LLaDAConfig.tiny(family="gpt2")
    with pytest.raises(ValueError, match=r"logit_alignment='left': expected one of \('same', 'shifted'\)"):
        LLaDAConfig.tiny(logit_alignment="left")
    with pytest.raises(ValueError, match=r"partial_rotary_factor=1.5: expected in \(0, 1\]"):
        LLaDAConfig.tiny(partial_rotary_factor=1.5)
    with pytest.raises(ValueError, match=r"LLaDAConfig.mlp='relu': expected one of \['swiglu'"):
        LLaDAConfig.tiny(mlp="relu")


@pytest.mark.parametrize("family", FAMILIES)
def test_logits_equal_the_published_code(loaded, golden_dir, family):
    config, params = loaded[family]
    assert config.family == FAMILY.get(family, family) and config.logit_alignment == "shifted"
    assert {k: getattr(config, k) for k in KNOBS[family]} == KNOBS[family]
    g = np.load(golden_dir / f"{family}-tiny-logits.npz")
    kw = {"positions": jnp.asarray(g["position_ids"])} if "position_ids" in g else {}
    ours = np.asarray(llada_jax.build(config).apply({"params": params}, jnp.asarray(g["input_ids"]),
                                                    jnp.asarray(g["attention_mask"]), **kw))
    published = g["logits"]  # position i predicts token i + 1: ours at i + 1 scores that token
    # Every real position but the first of a padded row (its prediction is read at padding).
    scored = g["attention_mask"][:, :-1].astype(bool) & g["attention_mask"][:, 1:].astype(bool)
    diff = np.abs(ours[:, 1:] - published[:, :-1])[scored]
    assert diff.max() <= 1e-4, diff.max()
    real = g["attention_mask"][:, 0].astype(bool)  # position 0 reads itself
    np.testing.assert_allclose(ours[real, 0], published[real, 0], atol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_export_writes_the_published_layout_back(loaded, golden_dir, family, tmp_path):
    config, params = loaded[family]
    src = golden_dir / f"{family}-tiny"
    export.save_pretrained(config, jax.device_get(params), str(tmp_path / "out"), dtype="float32")
    theirs, ours = safetensors_io.DirReader(str(src)), safetensors_io.DirReader(str(tmp_path / "out"))
    assert sorted(ours.names) == sorted(theirs.names)
    for name in theirs.names:
        np.testing.assert_array_equal(ours.read(name), theirs.read(name), err_msg=name)
    written = json.loads((tmp_path / "out" / "config.json").read_text())
    published = json.loads((src / "config.json").read_text())
    assert written["model_type"] == published["model_type"]
    assert written["architectures"] == published["architectures"]
    again, _ = hf.load_pretrained(str(tmp_path / "out"), dtype="float32", scan_layers=False)
    assert again == config


def test_dream_export_ships_its_modeling_file_and_automodel_gives_our_logits_and_tokens(loaded, golden_dir, tmp_path):
    import torch
    import transformers

    config, params = loaded["dream"]
    out = tmp_path / "dream-export"
    export.save_pretrained(config, jax.device_get(params), str(out), dtype="float32")
    assert json.loads((out / "config.json").read_text())["auto_map"]["AutoModel"] == "modeling_dream.DreamModel"
    net = transformers.AutoModel.from_pretrained(str(out), trust_remote_code=True, dtype=torch.float32)
    assert type(net).__name__ == "DreamModel"
    g = np.load(golden_dir / "dream-tiny-logits.npz")
    t = {k: torch.from_numpy(g[k]).long() for k in ("input_ids", "attention_mask", "position_ids") if k in g}
    with torch.no_grad():
        theirs = net(**t).logits.numpy()  # Dream's: position i predicts token i + 1, as published
    np.testing.assert_allclose(theirs[g["attention_mask"].astype(bool)],
                               g["logits"][g["attention_mask"].astype(bool)], atol=1e-4, rtol=0)
    kw = {"positions": jnp.asarray(g["position_ids"])} if "position_ids" in g else {}
    ours = np.asarray(llada_jax.build(config).apply({"params": params}, jnp.asarray(g["input_ids"]),
                                                    jnp.asarray(g["attention_mask"]), **kw))
    real = g["attention_mask"].astype(bool)
    diff = np.abs(np.concatenate([theirs[:, :1], theirs[:, :-1]], 1) - ours)[real].max()
    print("dream AutoModel vs JAX, max |diff|:", diff)
    assert diff <= 1e-4
    # its diffusion_generate: the published sampler's tokens (the JAX sampler's golden cases)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 96 calls of a tiny model: 10x faster than 2 threads on the shared CI cores
    try:
        for case in json.loads((golden_dir / "dream-tiny-generate.json").read_text()):
            o = dict(case["options"])
            o["max_new_tokens"] = o.pop("gen_length")
            out = net.diffusion_generate(torch.tensor(case["prompt"]),
                                         attention_mask=torch.tensor(case["attention_mask"]), **o)
            np.testing.assert_array_equal(out.numpy(), np.asarray(case["tokens"]), err_msg=str(o))
    finally:
        torch.set_num_threads(threads)
    with pytest.raises(ValueError, match=r"diffusion_generate: alg='greedy', expected one of \('maskgit_plus'"):
        net.diffusion_generate(torch.tensor([[3, 4]]), max_new_tokens=2, alg="greedy")


def test_dream_peft_adapters_follow_qwen2_names_and_give_the_merged_logits(loaded, tmp_path):
    import torch
    import transformers
    from peft import PeftModel

    from llada_jax.checkpoint.load import merge_lora
    from llada_jax.model import init_params
    from llada_jax.model.adapters import lora

    config, params = loaded["dream"]
    cfg = config.replace(lora=lora.LoRAConfig(rank=4, alpha=8.0))
    rng = np.random.default_rng(0)
    shapes = lora.split(jax.eval_shape(lambda k: init_params(cfg, k), jax.random.key(0)))[0]
    adapters = jax.tree_util.tree_map(lambda x: rng.normal(0, 0.05, x.shape).astype(np.float32), shapes)
    trained = lora.combine(adapters, jax.device_get(params))
    out = {n: str(tmp_path / f"dream-{n}") for n in ("base", "merged", "peft")}
    export.save_pretrained(config, jax.device_get(params), out["base"], dtype="float32")
    export.save_pretrained(*merge_lora(cfg, trained, dtype="float32"), out["merged"], dtype="float32")
    export.save_peft(cfg, trained, out["peft"], base_model=out["base"])
    ids = torch.tensor([[3, 17, 95, 42, 9, 94, 7, 95], [5, 6, 95, 8, 20, 2, 95, 11]])

    def logits(path, peft=False):
        net = transformers.AutoModel.from_pretrained(path, trust_remote_code=True, dtype=torch.float32)
        net = PeftModel.from_pretrained(net, out["peft"]) if peft else net
        with torch.no_grad():
            return net(input_ids=ids).logits.numpy(), net

    merged, _ = logits(out["merged"])
    with_peft, net = logits(out["base"], peft=True)
    adapted = [n for n, _ in net.named_modules() if n.endswith(".lora_A")]
    assert len(adapted) == config.n_layers * len(lora.TARGETS)
    assert "base_model.model.model.layers.0.self_attn.o_proj.lora_A" in adapted
    assert np.abs(logits(out["base"])[0] - merged).max() > 1e-1  # the adapters matter
    np.testing.assert_allclose(with_peft, merged, atol=1e-5, rtol=0)
    print("dream PEFT vs merged export, max |diff|:", np.abs(with_peft - merged).max())


def test_dream_sampler_matches_diffusion_generate_token_for_token(loaded, golden_dir):
    config, params = loaded["dream"]
    model = llada_jax.build(config)
    cases = json.loads((golden_dir / "dream-tiny-generate.json").read_text())
    assert {c["options"]["alg"] for c in cases} == {"maskgit_plus", "topk_margin", "entropy"}
    for case in cases:
        opts = case["options"]
        out = llada_jax.generate(model, params, np.asarray(case["prompt"]),
                                 attention_mask=np.asarray(case["attention_mask"]), **opts)
        np.testing.assert_array_equal(np.asarray(out), np.asarray(case["tokens"]), err_msg=str(opts))


def test_dream_sampler_bad_options(loaded):
    config, params = loaded["dream"]
    model, prompt = llada_jax.build(config), np.array([[3, 4, 5]], np.int32)
    with pytest.raises(ValueError, match=r"generate: alg='greedy', expected one of \('maskgit_plus'"):
        dream.generate(model, params, prompt, alg="greedy")
    with pytest.raises(ValueError, match=r"generate: top_p=0, expected None or in \(0, 1\]"):
        dream.generate(model, params, prompt, alg="entropy", top_p=0)
    with pytest.raises(ValueError, match=r"alg \(Dream's sampler\) cannot be combined with block_length"):
        llada_jax.generate(model, params, prompt, alg="entropy", block_length=4)


def test_dream_timesteps_are_torch_linspace():
    # torch.linspace(1, 1e-3, 9) and (1, 0.05, 6), float32, as printed by torch 2.13.
    np.testing.assert_array_equal(dream.timesteps(8, 1e-3), np.float32(
        [1.0, 0.875125, 0.75025, 0.625375, 0.5005, 0.375625, 0.25075, 0.125875, 0.001]))
    np.testing.assert_array_equal(dream.timesteps(5, 0.05), np.float32([1.0, 0.81, 0.62, 0.43, 0.24, 0.05]))


def _rewrite(tmp_path, src, change):
    d = tmp_path / "src"
    shutil.copytree(src, d)
    cfg = json.loads((d / "config.json").read_text())
    change(cfg)
    (d / "config.json").write_text(json.dumps(cfg))
    return d


@pytest.mark.parametrize("change, message", [
    (lambda c: c.update(model_type="gpt2", architectures=["GPT2LMHeadModel"]),
     r"error: .*config.json: model_type='gpt2', architectures=\['GPT2LMHeadModel'\] is no known model family; "
     r"expected model_type one of Dream, llada, llada21_moe, llada2_moe, lladamoe, llama, qwen2, qwen3"),
    (lambda c: c.pop("intermediate_size"), r"error: .*config.json is missing intermediate_size: expected"),
    (lambda c: c.update(rope_scaling={"rope_type": "yarn", "factor": 4.0}),
     r"error: .*config.json: rope_type='yarn' is not supported \(expected one of \('default', 'llama3'\)\)"),
    (lambda c: c.update(rope_scaling={"rope_type": "llama3", "factor": 8.0}),
     r"error: .*config.json: rope_type 'llama3' is missing high_freq_factor"),
    (lambda c: c.update(hidden_act="gelu"), r"error: .*config.json: hidden_act='gelu' is not supported"),
    (lambda c: c.update(num_key_value_heads=4), r"error: .*model.safetensors: tensor "
     r"'model.layers.0.self_attn.k_proj.weight' has shape \(32, 64\), expected \(64, 64\) for the qwen2 family"),
    (lambda c: c.update(tie_word_embeddings=False), r"error: .*model.safetensors: checkpoint is missing 1 "
     r"tensors, first 'lm_head.weight' \(expected shape \(96, 64\)\)"),
])
def test_import_rejects_bad_input_with_one_error_line(golden_dir, tmp_path, change, message):
    src = _rewrite(tmp_path, golden_dir / "qwen2-tiny", change)
    with pytest.raises(SystemExit) as e:  # its code is the one line the CLI prints
        import_hf.main([f"--src={src}", f"--workdir={tmp_path / 'wd'}"])
    assert "\n" not in str(e.value.code) and re.search(message, str(e.value.code)), e.value.code
    assert not (tmp_path / "wd" / "checkpoints").exists()


def test_import_prints_the_family_flags(loaded):
    flags = import_hf.model_flags(loaded["qwen3"][0])
    for flag in ("family=qwen3", "qk_norm=True", "logit_alignment=shifted", "attention_head_dim=32", "causal=True"):
        assert f"--config.model.{flag}" in flags
    assert not [f for f in import_hf.model_flags(LLaDAConfig.tiny()) if "qk_norm" in f or "alignment" in f]
    # Llama 3.1's RoPE rescaling: printed as flags that the config schema takes back
    from llada_jax.config import base_config, set_model_field, with_model_defaults
    from llada_jax.model import from_config

    config = loaded["llama3"][0]
    flags = [f for f in import_hf.model_flags(config) if ".rope_scaling." in f]
    assert "--config.model.rope_scaling.rope_type=llama3" in flags and len(flags) == 5
    c = base_config()
    for f in flags:  # as the command line parses them: typed like the schema's defaults
        key, value = f.removeprefix("--config.model.").split("=")
        set_model_field(c.model, key, value)
    c.model.vocab_size = c.model.embedding_size = 96
    assert from_config.model_config(with_model_defaults(c), None).rope_scaling == config.rope_scaling
