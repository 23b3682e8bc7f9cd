"""Block diffusion training (BD3-LM): block size = L is LLaDA's loss exactly, block size 1
an autoregressive loss; the train step with a warm-up, the mesh, remat, chunked attention,
LoRA and block SFT from `train.init_from`; the RL log-probability of a block policy."""

import json
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from llada_jax import objectives
from llada_jax.model import LLaDAConfig, attention, build, init_params
from llada_jax.objectives import block_diffusion, diffusion, grpo
from llada_jax.training import loop, step as train, validate

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from train_helper import tiny_config  # noqa: E402

L = 8


@pytest.fixture(scope="module")
def tiny():
    cfg = LLaDAConfig.tiny()
    return build(cfg), init_params(cfg, jax.random.key(2))


def _forward(model, params):
    def forward(ids, valid=None, *, positions=None, pattern=None):
        return diffusion.ChunkedLogits(*model.apply({"params": params}, ids, positions=positions,
                                                    attention_pattern=pattern, return_hidden=True), chunk=4)
    return forward


def test_block_size_equal_to_the_length_is_llada_pretraining_exactly(tiny):
    model, params = tiny
    ids = jax.random.randint(jax.random.key(3), (2, L), 0, 250)
    rng = jax.random.key(4)
    noise = block_diffusion.block_forward_process(rng, ids, 255, 1e-3, L)
    for a, b in zip(noise, diffusion.forward_process(rng, ids, 255, 1e-3)):  # the same draws
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    objective = train.objective_of(train.Static(model, None, "block_diffusion", 255, 1e-3, 0.0, 1, block_size=L))
    got, gm = jax.jit(lambda p: objective.loss(_forward(model, p), {"input_ids": ids}, noise, None))(params)
    want, wm = jax.jit(lambda p: objectives.get("pretrain").loss(_forward(model, p), {"input_ids": ids}, noise,
                                                                  None))(params)
    np.testing.assert_allclose(float(got), float(want), rtol=1e-6)
    assert int(gm["num_masked"]) == int(wm["num_masked"]) > 0


def test_block_size_one_predicts_each_token_from_the_clean_tokens_before_it(tiny):
    model, params = tiny
    ids = jax.random.randint(jax.random.key(5), (1, L), 0, 250)
    noisy = jnp.full_like(ids, 255)  # t = 1: every noisy token masked
    logits = block_diffusion.noisy_half_logits(_forward(model, params), noisy, ids, 1)
    got = np.asarray(jax.vmap(lambda h: h @ logits.head_ExV)(logits.hidden_BxLxE))[0]
    # position i: [x_0 .. x_{i-1}, MASK] under a causal mask, as an autoregressive model reads it
    rows = jnp.where(jnp.arange(L)[None, :] == jnp.arange(L)[:, None], 255, jnp.broadcast_to(ids, (L, L)))
    causal = model.apply({"params": params}, rows, attention_pattern=attention.CAUSAL)
    want = np.asarray(causal)[np.arange(L), np.arange(L)]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_block_training_errors_name_the_value():
    for over, match in [({"data.kind": "block_diffusion"}, "expected config.model.block_size >= 1, got 0"),
                        ({"data.kind": "block_diffusion", "model.block_size": 5},
                         r"block size 5 \(config.model.block_size / train.block_warmup\) must divide "
                         "config.data.seq_len=32"),
                        ({"data.kind": "block_diffusion", "model.block_size": 8, "train.block_warmup": "3:2"},
                         "block size 3"),
                        ({"model.block_size": 8}, "a block-causal model trains with data.kind"),
                        ({"data.kind": "mdlm"}, r"expected one of \('pretrain', 'sft', 'block_diffusion'")]:
        with pytest.raises(ValueError, match=match):
            validate.train_config(tiny_config(**over), 8)


@pytest.fixture(scope="module")
def block_run(tmp_path_factory):
    """4 block-diffusion steps: block 4 for 2 steps, then 8; fsdp x tensor mesh, full remat, chunked."""
    workdir = str(tmp_path_factory.mktemp("block"))
    cfg = tiny_config(**{"data.kind": "block_diffusion", "model.block_size": 8, "train.block_warmup": "4:2",
                         "train.steps": 4, "model.remat_policy": "full", "model.attention": "chunked",
                         "mesh.data": 2, "mesh.fsdp": 2, "mesh.tensor": 2})
    state, last = loop.train_and_evaluate(cfg, workdir)
    return workdir, state, last


def test_block_diffusion_trains_on_a_mesh_with_warmup(block_run):
    workdir, state, last = block_run
    assert int(state["step"]) == 4 and np.isfinite(float(last["loss"]))
    assert json.loads((pathlib.Path(workdir) / "run.json").read_text())["model"]["block_size"] == 8


def test_block_sft_with_lora_from_init_from_and_the_rl_estimate(block_run, tmp_path):
    workdir, _, _ = block_run
    cfg = tiny_config(**{"data.kind": "block_sft", "model.block_size": 8, "train.steps": 2, "train.init_from": workdir,
                         "lora.rank": 4, "lora.base_dtype": "float32"})
    state, last = loop.train_and_evaluate(cfg, str(tmp_path), devices=jax.devices()[:1])
    assert int(state["step"]) == 2 and np.isfinite(float(last["loss"]))
    assert int(last["masked_prompt_tokens"]) == 0  # the prompt is never masked
    # d1's log-probability estimate of a block policy: its block-causal forward pass
    model = build(LLaDAConfig.tiny(block_size=4))
    params = init_params(model.config, jax.random.key(0))
    ids = jax.random.randint(jax.random.key(1), (2, 12), 0, 250)
    logp = grpo.completion_logps(lambda p, x: model.apply({"params": p}, x), params, ids, jax.random.key(2),
                                 prompt_len=4, p_mask_prompt=0.0, mask_id=255)
    full = model.apply({"params": params}, jnp.where(jnp.arange(12) >= 4, 255, ids))
    np.testing.assert_allclose(np.asarray(logp), np.asarray(grpo.token_logps(full, ids))[:, 4:], rtol=1e-6)
