"""JAX -> Hugging Face export -> PyTorch / JAX round trips on a tiny random model."""

import json
import os

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing may be fetched: AutoModel must work from the export alone

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from llada_jax.interop import export, hf, import_hf, layout, safetensors_io  # noqa: E402
from llada_jax.parallel import sharding  # noqa: E402
from llada_jax.model import LLaDA, LLaDAConfig, init_params  # noqa: E402
from llada_jax.interop.torch_model import LLaDATorch  # noqa: E402

CONFIG = LLaDAConfig.tiny(n_heads=4, n_kv_heads=2, n_layers=3)  # GQA, odd depth
IDS = np.array([[3, 17, 255, 42, 9, 250, 7, 255, 1, 99], [250, 250, 250, 5, 255, 6, 255, 8, 200, 2]], np.int32)
MASK = np.array([[1] * 10, [0, 0, 0] + [1] * 7], np.int32)  # row 1 left-padded


@pytest.fixture(scope="module")
def model():
    params = init_params(CONFIG, jax.random.key(1))
    # Spread the weights so logits are O(1) (max ~2) and a wrong transpose shows up far
    # above 1e-5; larger spreads amplify float32 rounding past 1e-5 through the layers.
    params = jax.tree_util.tree_map(lambda x: x * 3.0 if x.ndim > 1 else x, params)
    logits = np.asarray(LLaDA(CONFIG).apply({"params": params}, IDS, jnp.asarray(MASK)))
    return params, logits


@pytest.fixture(scope="module")
def fp32_export(model, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("fp32"))
    files = hf.save_pretrained(CONFIG, model[0], path, dtype="float32", max_shard_size=60_000)
    return path, files


def test_export_files_and_config(fp32_export):
    path, files = fp32_export
    assert len(files) > 1 and files[0] == f"model-00001-of-{len(files):05d}.safetensors"
    with open(os.path.join(path, "model.safetensors.index.json")) as f:
        index = json.load(f)
    assert sorted(index["weight_map"]) == sorted(hf.hf_key_list(CONFIG))
    assert set(index["weight_map"].values()) == set(files)
    n_params = sum(int(np.prod(s)) for s in layout.expected_shapes(CONFIG).values())
    assert index["metadata"]["total_size"] == 4 * n_params
    for f in files:  # no shard over the limit unless it holds one tensor alone
        hdr, _ = safetensors_io.read_header(os.path.join(path, f))
        assert os.path.getsize(os.path.join(path, f)) - 8 < 60_000 + 2_000 or len(hdr) == 1
    with open(os.path.join(path, "config.json")) as f:
        cfg = json.load(f)
    assert (cfg["model_type"], cfg["architectures"], cfg["block_type"]) == ("llada", ["LLaDAModelLM"], "llama")
    assert (cfg["d_model"], cfg["n_heads"], cfg["n_kv_heads"], cfg["n_layers"]) == (64, 4, 2, 3)
    assert cfg["activation_type"] == "silu" and cfg["layer_norm_type"] == "rms" and cfg["rope"] is True
    assert cfg["alibi"] is False and cfg["include_bias"] is False and cfg["weight_tying"] is False
    assert cfg["rope_full_precision"] is True and cfg["torch_dtype"] == "float32"
    assert cfg["auto_map"]["AutoModel"] == "modeling_llada.LLaDAModelLM"
    with open(os.path.join(path, "generation_config.json")) as f:
        assert json.load(f)["eos_token_id"] == CONFIG.eos_token_id
    assert os.path.isfile(os.path.join(path, "modeling_llada.py"))


def test_fp32_export_torch_logits_match_jax(model, fp32_export):
    params, logits = model
    net = LLaDATorch.from_pretrained(fp32_export[0])
    assert net.model.transformer.blocks[2].q_proj.weight.dtype == torch.float32
    with torch.no_grad():
        out = net(torch.from_numpy(IDS).long(), torch.from_numpy(MASK)).numpy()
    assert np.abs(logits).max() > 1.0  # the comparison below is not vacuous
    np.testing.assert_allclose(out, logits, atol=1e-5, rtol=0)


def test_export_then_import_is_bitwise(model, fp32_export):
    params = model[0]
    config, back = hf.load_pretrained(fp32_export[0])
    assert config == CONFIG
    flat, back_flat = jax.tree_util.tree_leaves_with_path(params), dict(jax.tree_util.tree_leaves_with_path(back))
    assert len(flat) == len(back_flat)
    for path, x in flat:
        np.testing.assert_array_equal(np.asarray(back_flat[path]), np.asarray(x), err_msg=str(path))
    # Unstacked import of the same files: layer i of the stack is blocks_i.
    config_u, unstacked = hf.load_pretrained(fp32_export[0], scan_layers=False)
    assert not config_u.scan_layers
    np.testing.assert_array_equal(np.asarray(unstacked["blocks_2"]["attn_out"]),
                                  np.asarray(params["blocks"]["attn_out"][2]))
    np.testing.assert_array_equal(np.asarray(unstacked["blocks_1"]["ff_norm"]["scale"]),
                                  np.asarray(params["blocks"]["ff_norm"]["scale"][1]))


def test_bf16_export_loads_and_matches(model, tmp_path):
    params, logits = model
    hf.save_pretrained(CONFIG, params, str(tmp_path))
    hdr, _ = safetensors_io.read_header(str(tmp_path / "model.safetensors"))
    assert {e["dtype"] for e in hdr.values()} == {"BF16"}
    config, back = hf.load_pretrained(str(tmp_path))
    assert config.param_dtype == "bfloat16"
    want = np.asarray(params["blocks"]["q_proj"]).astype(jnp.bfloat16)
    np.testing.assert_array_equal(np.asarray(back["blocks"]["q_proj"]), want)  # round-to-nearest, bit for bit
    net = LLaDATorch.from_pretrained(str(tmp_path))
    assert net.model.transformer.wte.weight.dtype == torch.bfloat16
    ids, mask = torch.from_numpy(IDS).long(), torch.from_numpy(MASK)
    with torch.no_grad():
        out_bf16 = net(ids, mask).numpy()
        out_fp32 = net.float()(ids, mask).numpy()
    # Same bf16 weights, float32 compute on both sides: equal to float32 rounding.
    jax_fp32 = np.asarray(LLaDA(config).apply({"params": back}, IDS, jnp.asarray(MASK)))
    np.testing.assert_allclose(out_fp32, jax_fp32, atol=1e-5, rtol=0)
    # bf16 compute: no further from the float32 model than JAX's own bf16 run (a layout
    # error would be O(1), the size of the logits).
    jax_bf16 = np.asarray(LLaDA(config.replace(dtype="bfloat16")).apply({"params": back}, IDS, jnp.asarray(MASK)))
    budget = np.abs(jax_bf16 - logits).max()
    assert 0.01 < budget < 0.2 * np.abs(logits).max()
    assert np.abs(out_bf16 - logits).max() < 2 * budget, (np.abs(out_bf16 - logits).max(), budget)


def test_automodel_trust_remote_code_offline(model, fp32_export):
    import transformers

    params, logits = model
    net = transformers.AutoModel.from_pretrained(fp32_export[0], trust_remote_code=True)
    assert type(net).__name__ == "LLaDAModelLM"
    with torch.no_grad():
        out = net(input_ids=torch.from_numpy(IDS).long(), attention_mask=torch.from_numpy(MASK))
    np.testing.assert_allclose(out.logits.numpy(), logits, atol=1e-5, rtol=0)


def test_sharded_load_and_streaming_save(model, fp32_export, tmp_path):
    params = model[0]
    mesh = sharding.make_mesh({"data": 1, "fsdp": 4, "tensor": 2})
    config, placed = hf.load_pretrained(fp32_export[0], mesh=mesh)
    q = placed["blocks"]["q_proj"]
    assert q.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor", None)
    assert q.addressable_shards[0].data.shape == (3, 16, 2, 16)  # each device holds 1/8
    np.testing.assert_array_equal(np.asarray(q), np.asarray(params["blocks"]["q_proj"]))
    assert placed["ff_out"].sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor")
    # Export straight from the sharded arrays; the files equal the single-device export's.
    hf.save_pretrained(config, placed, str(tmp_path), dtype="float32", max_shard_size=60_000)
    for f in fp32_export[1]:
        with open(os.path.join(fp32_export[0], f), "rb") as a, open(tmp_path / f, "rb") as b:
            assert a.read() == b.read(), f


def test_save_rejects_bad_params(model, tmp_path):
    params = jax.tree_util.tree_map(lambda x: x, model[0])
    params["blocks"] = dict(params["blocks"], up_proj=params["blocks"]["up_proj"][:, :, :64])
    with pytest.raises(ValueError, match=r"blocks/up_proj.*\(3, 64, 64\), expected \(3, 64, 128\)"):
        hf.save_pretrained(CONFIG, params, str(tmp_path))
    del params["blocks"]["up_proj"]
    with pytest.raises(ValueError, match="missing 'blocks/up_proj'"):
        hf.save_pretrained(CONFIG, params, str(tmp_path))
    with pytest.raises(ValueError, match="max_shard_size='5 pigs'"):
        hf.save_pretrained(CONFIG, model[0], str(tmp_path), max_shard_size="5 pigs")
    assert not os.path.exists(tmp_path / "model.safetensors")


def test_tokenizer_files_are_copied(model, tmp_path):
    src = tmp_path / "tok"
    src.mkdir()
    (src / "tokenizer.json").write_text('{"version": "1.0"}')
    (src / "tokenizer_config.json").write_text('{"chat_template": "x"}')
    out = tmp_path / "out"
    hf.save_pretrained(CONFIG, model[0], str(out), tokenizer=str(src))
    assert (out / "tokenizer.json").read_text() == '{"version": "1.0"}'
    assert (out / "tokenizer_config.json").read_text() == '{"chat_template": "x"}'
    spm = tmp_path / "sp.model"
    spm.write_bytes(b"\x0a\x01spm")
    assert export.save_tokenizer(str(spm), str(out)) == ["tokenizer.model"]
    assert (out / "tokenizer.model").read_bytes() == b"\x0a\x01spm"
    with pytest.raises(ValueError, match="tokenizer=.*expected"):
        export.save_tokenizer(str(tmp_path / "nothing"), str(out))


def test_exported_tokenizer_knows_its_special_tokens(model, tmp_path):
    """AutoTokenizer on an export: mask, EOS (= pad), BOS, the chat template; a field of a
    copied tokenizer_config.json is kept. Both backends: tokenizer.json and sentencepiece."""
    import tokenizers
    import transformers
    from tokenizers import models, pre_tokenizers

    from llada_jax.data import documents, tokenizer

    ids = {tokenizer.BOS: 249, tokenizer.EOS: 250, tokenizer.EOT: 251, tokenizer.START_HEADER: 252, tokenizer.END_HEADER: 253, tokenizer.MASK: 255}
    vocab = {"[UNK]": 0, "hi": 1, "there": 2, "user": 3, "assistant": 4, **ids}
    hf_tok = tokenizers.Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    hf_tok.pre_tokenizer = pre_tokenizers.Whitespace()
    hf_tok.add_special_tokens(list(ids))
    src = tmp_path / "hf_tok"
    src.mkdir()
    hf_tok.save(str(src / "tokenizer.json"))
    (src / "tokenizer_config.json").write_text('{"model_max_length": 7}')
    hf.save_pretrained(CONFIG, model[0], str(tmp_path / "a"), tokenizer=str(src))
    tok = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "a"), trust_remote_code=True)
    assert (tok.mask_token, tok.eos_token, tok.pad_token, tok.bos_token) == (tokenizer.MASK, tokenizer.EOS, tokenizer.EOS, tokenizer.BOS)
    assert (tok.mask_token_id, tok.eos_token_id, tok.pad_token_id) == (CONFIG.mask_token_id, 250, 250)
    assert tok.model_max_length == 7  # the copied field wins
    chat = [{"role": "user", "content": "  hi\n"}, {"role": "assistant", "content": "there"},
            {"role": "user", "content": "hi"}]
    ours = tokenizer.load_tokenizer(str(src))
    assert tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True) == ours.chat_text(chat)
    assert tok.decode(ours.render_chat(chat), skip_special_tokens=True).split() == ["user", "hi", "assistant", "there",
                                                                                  "user", "hi", "assistant"]
    spm = tokenizer.train_sentencepiece(documents.stdlib_files("train")[:5], str(tmp_path / "sp"), 400, max_bytes=50_000)
    hf.save_pretrained(CONFIG, model[0], str(tmp_path / "b"), tokenizer=spm)
    tok = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "b"), trust_remote_code=True)
    specials = (tok.mask_token_id, tok.eos_token_id, tok.pad_token_id, tok.bos_token_id, tok.unk_token_id)
    assert specials == (3, 2, 2, 1, 0)
    text = "def f(x):\n    return x + 1  é"
    assert tok.encode(text, add_special_tokens=False) == spm.encode(text)
    assert tok.model_max_length == CONFIG.max_sequence_length


def test_command_lines_round_trip(fp32_export, model, tmp_path):
    workdir, out = str(tmp_path / "wd"), str(tmp_path / "hf")
    import_hf.main([f"--src={fp32_export[0]}", f"--workdir={workdir}"])
    with open(os.path.join(workdir, "run.json")) as f:
        assert LLaDAConfig(**json.load(f)["model"]) == CONFIG
    export.main([f"--workdir={workdir}", "--step=0", f"--out={out}", "--dtype=float32"])
    config, back = hf.load_pretrained(out)
    assert config == CONFIG
    np.testing.assert_array_equal(np.asarray(back["wte"]), np.asarray(model[0]["wte"]))
    with pytest.raises(SystemExit, match="error: step 7: not among the saved steps \\[0\\]"):
        export.main([f"--workdir={workdir}", "--step=7", f"--out={out}", "--overwrite"])
    assert hf.load_pretrained(out)[0] == CONFIG  # a failed export leaves the earlier one whole


def test_exported_generate_gives_llada_jax_tokens(model, fp32_export):
    """AutoModel(trust_remote_code)'s generate == llada_jax.generate at temperature 0, in one
    compiled case: left padding, masks inside the prompt (infilling), two blocks, the EOS
    options. cfg is compared with the official sampler's tokens in torch_model_test: on this
    random model it makes the mask token itself the argmax, and a block left unfinished that
    way stays a candidate in the published sampler (and ours in PyTorch), not in llada_jax."""
    import transformers

    import llada_jax

    net = transformers.AutoModel.from_pretrained(fp32_export[0], trust_remote_code=True)
    kw = dict(steps=8, gen_length=8, block_length=4, logits_eos_inf=True, confidence_eos_eot_inf=True, eot_id=251)
    want = np.asarray(llada_jax.generate(LLaDA(CONFIG), model[0], IDS, attention_mask=MASK, **kw))
    got = net.generate(torch.from_numpy(IDS).long(), torch.from_numpy(MASK), **kw)
    assert (IDS == CONFIG.mask_token_id).any() and not (want == CONFIG.mask_token_id).any()  # holes filled
    np.testing.assert_array_equal(got.numpy(), want)
