"""Block diffusion training (BD3-LM): block size = L is LLaDA's loss exactly, block size 1
an autoregressive loss; the train step with a warm-up, the mesh, remat, chunked attention,
LoRA and block SFT from `train.init_from`; the RL log-probability of a block policy; the
MoE family trains block-causal too."""

import json
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from llada_jax import objectives
from llada_jax.model import LLaDAConfig, attention, build, init_params
from llada_jax.model.moe import MoEConfig
from llada_jax.objectives import block_diffusion, diffusion, grpo
from llada_jax.config import rules
from llada_jax.training import loop, step

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from train_helper import tiny_config  # noqa: E402

L = 8
MASK = 255


def _forward(model, params):
    def forward(ids, valid=None, *, positions=None, pattern=None):
        return diffusion.ChunkedLogits(*model.apply({"params": params}, ids, positions=positions,
                                                    attention_pattern=pattern, return_hidden=True), chunk=4)
    return forward


@pytest.fixture(scope="module")
def losses():
    """Every number the objective tests compare, from one compiled program: block = L
    against LLaDA's pre-training loss on the same draws, block 1 against a causal model
    reading [x_0 .. x_{i-1}, MASK], GRPO's estimate of a block policy against its pass, and
    a block-causal MoE (a dense first layer: two scanned stacks) on two inputs that differ
    in the second block only."""
    cfg = LLaDAConfig.tiny(n_layers=1)
    model, block4 = build(cfg), build(cfg.replace(block_size=4))
    params = init_params(cfg, jax.random.key(2))
    ids = jax.random.randint(jax.random.key(3), (2, L), 0, 250)
    rng = jax.random.key(4)
    st = step.Static(model, None, "block_diffusion", MASK, 1e-3, 0.0, 1, block_size=L)

    @jax.jit
    def run(p):
        out = {}
        noise = block_diffusion.block_forward_process(rng, ids, MASK, 1e-3, L)
        out["block_noise"], out["llada_noise"] = noise, diffusion.forward_process(rng, ids, MASK, 1e-3)
        out["block_L"] = step.objective_of(st).loss(_forward(model, p), {"input_ids": ids}, noise, None)
        out["pretrain"] = objectives.get("pretrain").loss(_forward(model, p), {"input_ids": ids}, noise, None)
        one = block_diffusion.noisy_half_logits(_forward(model, p), jnp.full_like(ids[:1], MASK), ids[:1], 1)
        out["block_1"] = (one.hidden_BxLxE @ one.head_ExV)[0]
        rows = jnp.where(jnp.eye(L, dtype=bool), MASK, jnp.broadcast_to(ids[:1], (L, L)))
        causal = model.apply({"params": p}, rows, attention_pattern=attention.CAUSAL)
        out["causal"] = causal[jnp.arange(L), jnp.arange(L)]
        long_ids = jnp.concatenate([ids, ids[:, :4]], axis=1)  # 12 tokens: 3 blocks of 4
        out["grpo"] = grpo.completion_logps(lambda q, x: block4.apply({"params": q}, x), p, long_ids,
                                            jax.random.key(2), prompt_len=4, p_mask_prompt=0.0, mask_id=MASK)
        full = block4.apply({"params": p}, jnp.where(jnp.arange(12) >= 4, MASK, long_ids))
        out["grpo_full"] = grpo.token_logps(full, long_ids)[:, 4:]
        out["moe"] = moe.apply({"params": moe_params}, jnp.stack([long_ids[0], long_ids[0].at[6].set(7)]))
        return out

    moe_cfg = LLaDAConfig.tiny(n_layers=2, block_size=4, moe=MoEConfig(
        num_experts=4, num_experts_per_tok=2, expert_hidden_size=32, shared_hidden_size=16, first_k_dense=1))
    moe, moe_params = build(moe_cfg), init_params(moe_cfg, jax.random.key(5))
    return jax.tree_util.tree_map(np.asarray, run(params))


def test_block_size_equal_to_the_length_is_llada_pretraining_exactly(losses):
    for a, b in zip(losses["block_noise"], losses["llada_noise"]):  # the same draws
        np.testing.assert_array_equal(a, b)
    (got, gm), (want, wm) = losses["block_L"], losses["pretrain"]
    np.testing.assert_allclose(float(got), float(want), rtol=1e-6)
    assert int(gm["num_masked"]) == int(wm["num_masked"]) > 0


def test_block_size_one_predicts_each_token_from_the_clean_tokens_before_it(losses):
    # position i: [x_0 .. x_{i-1}, MASK] under a causal mask, as an autoregressive model reads it
    np.testing.assert_allclose(losses["block_1"], losses["causal"], rtol=1e-4, atol=1e-4)


def test_rl_log_probability_of_a_block_policy_is_its_block_causal_pass(losses):
    np.testing.assert_allclose(losses["grpo"], losses["grpo_full"], rtol=1e-6)


def test_moe_family_is_block_causal(losses):
    a, b = losses["moe"]
    np.testing.assert_array_equal(a[:4], b[:4])  # block 0 never sees block 1
    assert np.abs(a[4:] - b[4:]).max() > 1e-3  # blocks 1 and 2 see the change


def test_block_training_errors_name_the_value():
    for over, match in [({"data.kind": "block_diffusion"}, "expected config.model.block_size >= 1, got 0"),
                        ({"data.kind": "block_diffusion", "model.block_size": 5},
                         r"block size 5 \(config.model.block_size / train.block_warmup\) must divide "
                         "config.data.seq_len=32"),
                        ({"data.kind": "block_diffusion", "model.block_size": 8, "train.block_warmup": "3:2"},
                         "block size 3"),
                        ({"data.kind": "block_diffusion", "model.block_size": 8, "train.block_warmup": "4:x"},
                         "expected 'SIZE:UNTIL_STEP,...'"),
                        ({"model.block_size": 8}, "a block-causal model trains with data.kind"),
                        ({"data.kind": "mdlm"}, r"expected one of \('pretrain', 'sft', 'block_diffusion'")]:
        with pytest.raises(ValueError, match=match):
            rules.train_config(tiny_config(**over), 8)


SMALL = {"model.n_layers": 1, "data.seq_len": 16, "data.batch_size": 4, "checkpoint.every": 100,
         "optim.warmup_steps": 0, "optim.decay_steps": 1}


@pytest.fixture(scope="module")
def block_run(tmp_path_factory):
    """A full-diffusion checkpoint (one LLaDA pre-training step) converted by 2 block-diffusion
    steps from train.init_from: block 4 for step 0, then 8 (the warm-up's lax.switch);
    fsdp x tensor mesh, full remat, chunked attention."""
    full = str(tmp_path_factory.mktemp("full"))
    loop.train_and_evaluate(tiny_config(**SMALL, **{"train.steps": 1}), full, devices=jax.devices()[:1])
    workdir = str(tmp_path_factory.mktemp("block"))
    cfg = tiny_config(**SMALL, **{"data.kind": "block_diffusion", "model.block_size": 8, "train.block_warmup": "4:1",
                                  "train.steps": 2, "model.remat_policy": "full", "model.attention": "chunked",
                                  "mesh.data": 2, "mesh.fsdp": 2, "mesh.tensor": 2, "train.init_from": full})
    state, last = loop.train_and_evaluate(cfg, workdir)
    return workdir, state, last, full


def test_block_diffusion_converts_a_full_diffusion_checkpoint_on_a_mesh_with_warmup(block_run):
    workdir, state, last, full = block_run
    assert int(state["step"]) == 2 and np.isfinite(float(last["loss"]))
    info = json.loads((pathlib.Path(workdir) / "run.json").read_text())
    assert info["model"]["block_size"] == 8
    assert json.loads((pathlib.Path(full) / "run.json").read_text())["model"]["block_size"] == 0


def test_block_sft_with_lora_from_init_from(block_run, tmp_path):
    workdir, _, _, _ = block_run
    cfg = tiny_config(**SMALL, **{"data.kind": "block_sft", "model.block_size": 8, "train.steps": 2,
                                  "train.init_from": workdir, "lora.rank": 4, "lora.base_dtype": "float32"})
    state, last = loop.train_and_evaluate(cfg, str(tmp_path), devices=jax.devices()[:1])
    assert int(state["step"]) == 2 and np.isfinite(float(last["loss"]))
    assert int(last["masked_prompt_tokens"]) == 0  # the prompt is never masked
