"""Our PyTorch module against the published model's logits, and its padding mask."""

import json
import os
import shutil

import jax.numpy as jnp
import numpy as np
import pytest
import torch

from llada_jax.interop.torch_model import Args, LLaDATorch


@pytest.fixture(scope="module")
def golden_torch(golden_dir):
    return LLaDATorch.from_pretrained(str(golden_dir / "llada-tiny"))


def test_matches_published_logits(golden_torch, golden_dir):
    data = np.load(golden_dir / "llada-tiny-logits.npz")
    with torch.no_grad():
        out = golden_torch(torch.from_numpy(data["input_ids"]).long()).numpy()
    assert out.shape == (2, 24, 256) and np.abs(data["logits"]).max() > 5
    np.testing.assert_allclose(out, data["logits"], atol=1e-5, rtol=0)
    with torch.no_grad():  # an all-ones mask is the same as none
        ones = golden_torch(torch.from_numpy(data["input_ids"]).long(), torch.ones(2, 24, dtype=torch.long))
    np.testing.assert_array_equal(ones.numpy(), out)


def test_padding_mask_is_applied(golden_torch, golden_model, golden_dir):
    ids = np.load(golden_dir / "llada-tiny-logits.npz")["input_ids"][:1, :12]
    pad = 4
    padded = np.concatenate([np.full((1, pad), 250, np.int32), ids], axis=1)
    mask = np.concatenate([np.zeros((1, pad), np.int32), np.ones_like(ids)], axis=1)
    with torch.no_grad():
        plain = golden_torch(torch.from_numpy(ids).long()).numpy()
        masked = golden_torch(torch.from_numpy(padded).long(), torch.from_numpy(mask)).numpy()
        unmasked = golden_torch(torch.from_numpy(padded).long()).numpy()
    # RoPE scores depend on relative positions only, so with the pads masked out the real
    # tokens see exactly what they see unpadded; unmasked, the pads change everything.
    np.testing.assert_allclose(masked[:, pad:], plain, atol=1e-4, rtol=0)
    assert np.abs(unmasked[:, pad:] - plain).max() > 0.1
    model, params = golden_model
    jax_masked = np.asarray(model.apply({"params": params}, padded, jnp.asarray(mask)))
    np.testing.assert_allclose(masked, jax_masked, atol=1e-5, rtol=0)


def test_grouped_query_heads_follow_repeat_interleave():
    """kv head j serves query heads j*g .. j*g+g-1 (the published modeling_llada.py): with the second kv
    head's values zeroed, query heads 2 and 3 output zero, heads 0 and 1 do not."""
    a = Args(d_model=16, n_heads=4, n_kv_heads=2, n_layers=1, mlp_hidden_size=8, embedding_size=10)
    net = LLaDATorch(a)
    block = net.model.transformer.blocks[0]
    captured = {}
    block.attn_out.register_forward_hook(lambda m, inp, out: captured.setdefault("x", inp[0]))
    with torch.no_grad():
        block.v_proj.weight[4:] = 0  # kv head 1 = rows 4..7 (head_dim 4)
        net(torch.tensor([[1, 2, 3]]))
    per_head = captured["x"].view(1, 3, 4, 4).abs().amax(dim=(0, 1, 3))
    assert per_head[2] == 0 and per_head[3] == 0 and per_head[0] > 0 and per_head[1] > 0


def test_from_pretrained_errors(golden_dir, tmp_path):
    src = golden_dir / "llada-tiny"
    shutil.copy(src / "model.safetensors", tmp_path / "model.safetensors")
    cfg = json.loads((src / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(dict(cfg, mlp_hidden_size=64)))
    with pytest.raises(ValueError, match=r"'model.transformer.blocks.0.(ff_proj|up_proj|ff_out).weight' has shape "
                                         r"\((128, 64|64, 128)\), expected \((64, 64)\)"):
        LLaDATorch.from_pretrained(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps(dict(cfg, n_layers=3)))
    with pytest.raises(ValueError, match="missing tensor 'model.transformer.blocks.2.attn_norm.weight'"):
        LLaDATorch.from_pretrained(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps(dict(cfg, n_layers=1)))
    with pytest.raises(ValueError, match="unexpected tensor 'model.transformer.blocks.1"):
        LLaDATorch.from_pretrained(str(tmp_path))
    assert os.path.exists(tmp_path / "model.safetensors")


def test_bf16_load_keeps_dtype_and_no_jax_needed(golden_dir):
    net = LLaDATorch.from_pretrained(str(golden_dir / "llada-tiny"), dtype=torch.bfloat16)
    assert {p.dtype for p in net.parameters()} == {torch.bfloat16}
    with torch.no_grad():
        out = net(torch.tensor([[1, 2, 3]]))
    assert out.dtype == torch.float32 and out.shape == (1, 3, 256)
    from llada_jax.interop import torch_model

    src = open(torch_model.__file__).read()
    assert "import jax" not in src and "from llada_jax" not in src  # the export copy stands alone


def test_generate_matches_the_published_sampler(golden_torch, golden_dir):
    """The exported file's sampler against the official generate.py's tokens:
    one block and several, steps not dividing the block, cfg, the EOS/EoT options."""
    from llada_jax.interop.torch_model import generate

    cases = json.loads((golden_dir / "llada-tiny-generate.json").read_text())
    assert len(cases) == 5
    for case in cases:
        out = generate(golden_torch, torch.tensor(case["prompt"]), **case["options"])
        assert out.tolist() == case["tokens"], case["options"]
    # the method takes the mask and EOS ids from config.json (255 and 250 here)
    case = cases[1]
    options = {k: v for k, v in case["options"].items() if k not in ("mask_id", "eos_id", "eot_id")}
    assert golden_torch.generate(torch.tensor(case["prompt"]), **options).tolist() == case["tokens"]


def test_generate_noise_is_float64_gumbel_and_seeded(golden_torch):
    from llada_jax.interop.torch_model import add_gumbel_noise

    logits = torch.randn(2, 3, 256, generator=torch.Generator().manual_seed(0))
    noisy = add_gumbel_noise(logits, 0.7, torch.Generator().manual_seed(5))
    assert noisy.dtype == torch.float64 and add_gumbel_noise(logits, 0.0) is logits
    u = torch.rand(logits.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    gumbel = -torch.log(-torch.log(u))  # exp(l) / (-log u)^T has the argmax of l + T * Gumbel
    assert torch.equal(noisy.argmax(-1), (logits.double() + 0.7 * gumbel).argmax(-1))
    prompt = torch.tensor([[3, 17, 42, 9], [5, 6, 8, 200]])
    kw = dict(steps=4, gen_length=8, block_length=4, temperature=1.0, remasking="random")
    a = golden_torch.generate(prompt, **kw, generator=torch.Generator().manual_seed(1))
    b = golden_torch.generate(prompt, **kw, generator=torch.Generator().manual_seed(1))
    c = golden_torch.generate(prompt, **kw, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(a[:, :4], prompt) and not (a == 255).any()


@pytest.mark.parametrize("kw, message", [
    (dict(gen_length=8, block_length=3), "block_length=3: expected a positive divisor of gen_length=8"),
    (dict(gen_length=8, block_length=4, steps=3),
     r"steps=3: expected a positive multiple of the number of blocks \(2\)"),
    (dict(remasking="top"), r"remasking='top': expected one of \('low_confidence', 'random'\)"),
    (dict(temperature=-1.0), "temperature=-1.0: expected >= 0"),
])
def test_generate_errors_name_the_option(golden_torch, kw, message):
    with pytest.raises(ValueError, match=message):
        golden_torch.generate(torch.tensor([[1, 2]]), **{"steps": 8, "gen_length": 8, "block_length": 8, **kw})
