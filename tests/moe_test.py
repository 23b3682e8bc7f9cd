"""The sparse MoE MLP (llada_jax.model.moe): routing against a per-token reference, both
dispatches against a per-token loop, the aux losses and their place in the training loss,
expert parallelism on 8 devices equal to one device, LoRA, FLOPs and the config's rules."""

import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from llada_jax import objectives
from llada_jax.model import LLaDAConfig, flops, init_params, moe
from llada_jax.model.adapters.lora import LoRAConfig
from llada_jax.model.moe import MoEConfig
from llada_jax.parallel import sharding
from llada_jax.training import optimizer, step, train_state

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from train_helper import tiny_config  # noqa: E402

MOE = MoEConfig(num_experts=4, num_experts_per_tok=2, expert_hidden_size=32, shared_hidden_size=16, first_k_dense=1)


def _route_reference(logits, m, bias):
    """The published rules, token by token in numpy."""
    out_w, out_i = [], []
    for z in logits.astype(np.float64):
        s = np.exp(z - z.max()) / np.exp(z - z.max()).sum() if m.score_function == "softmax" else 1 / (1 + np.exp(-z))
        c = s + (bias if m.expert_bias != "none" else 0)
        if m.n_group > 1:
            g = c.reshape(m.n_group, -1)
            best = np.argsort(-np.sort(g, 1)[:, -2:].sum(1))[:m.topk_group]
            c = np.where(np.isin(np.arange(len(c)) // g.shape[1], best), c, -np.inf)
        idx = np.argsort(-c, kind="stable")[:m.num_experts_per_tok]
        w = c[idx] if m.expert_bias == "weights" else s[idx]
        if m.norm_topk_prob:
            w = w / w.sum()
        out_w.append(w * m.routed_scaling_factor)
        out_i.append(idx)
    return np.array(out_w), np.array(out_i)


@pytest.mark.parametrize("m", [
    MoEConfig(num_experts=8, num_experts_per_tok=2, expert_bias="weights"),  # LLaDA-MoE's published block
    MoEConfig(num_experts=8, num_experts_per_tok=3, score_function="sigmoid", expert_bias="selection", n_group=4,
              topk_group=2, norm_topk_prob=True, routed_scaling_factor=2.5),  # LLaDA 2.x / DeepSeek-V3
])
def test_route_matches_a_per_token_reference(m):
    rng = np.random.default_rng(0)
    logits, bias = rng.normal(size=(32, 8)).astype(np.float32), 0.1 * rng.normal(size=8).astype(np.float32)
    w, idx, _ = moe.route(jnp.asarray(logits), m, jnp.asarray(bias))
    rw, ri = _route_reference(logits, m, bias)
    np.testing.assert_array_equal(np.asarray(idx), ri)
    np.testing.assert_allclose(np.asarray(w), rw, atol=1e-6)


def test_both_dispatches_equal_a_per_token_loop():
    rng = np.random.default_rng(1)
    t, e, h, x, k = 24, 16, 8, 6, 2
    xs, gate, up, down = (rng.normal(size=s).astype(np.float32) for s in ((t, e), (x, e, h), (x, e, h), (x, h, e)))
    w, idx, _ = moe.route(jnp.asarray(rng.normal(size=(t, x)), jnp.float32), MoEConfig(num_experts=x, num_experts_per_tok=k))
    w, idx = np.asarray(w), np.asarray(idx)
    want = np.zeros((t, e))
    for i in range(t):
        for j in range(k):
            a, g = idx[i, j], xs[i] @ gate[idx[i, j]]
            want[i] += w[i, j] * ((g / (1 + np.exp(-g)) * (xs[i] @ up[a])) @ down[a])
    for dispatch in moe.DISPATCH:
        got = jax.jit(moe.experts_apply, static_argnums=6)(xs, w, idx, gate, up, down, dispatch)
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def moe_model():
    cfg = LLaDAConfig.tiny(n_layers=3, moe=MOE)
    return cfg, jax.jit(lambda r: init_params(cfg, r))(jax.random.PRNGKey(0))


def test_model_with_dense_first_layers_two_stacks_dispatch_and_remat(moe_model):
    cfg, params = moe_model
    assert set(params) >= {"dense_blocks", "blocks"}  # two scanned stacks
    assert params["dense_blocks"]["ff_proj"].shape == (1, 64, 128)  # the dense MLP
    assert params["blocks"]["moe"]["experts_gate"].shape == (2, 4, 64, 32)  # (layers, experts, embed, mlp)
    assert params["blocks"]["moe"]["shared_gate"].shape == (2, 64, 16)
    ids = jnp.arange(16).reshape(2, 8) % 250
    ref = jax.jit(lambda p: llada(cfg).apply({"params": p}, ids))(params)
    for change in (dict(moe=dataclass_replace(MOE, dispatch="dense")), dict(remat_policy="full")):
        other = jax.jit(lambda p, c=cfg.replace(**change): llada(c).apply({"params": p}, ids))(params)
        np.testing.assert_allclose(np.asarray(other), np.asarray(ref), atol=2e-5)


def llada(cfg):
    from llada_jax.model import build

    return build(cfg)


def dataclass_replace(obj, **kw):
    import dataclasses

    return dataclasses.replace(obj, **kw)


def test_aux_losses_at_uniform_routing():
    m = MoEConfig(num_experts=8, num_experts_per_tok=2)
    logits = jnp.zeros((10, 8))
    _, idx, _ = moe.route(logits, m)
    balance, z = moe.aux_losses(logits, idx, m)
    assert abs(float(balance) - 2.0) < 1e-6  # num_experts_per_tok at uniform probabilities
    assert abs(float(z) - np.log(8) ** 2) < 1e-5  # logsumexp(0,...,0)^2


def _static(cfg, config):
    tx, schedule = optimizer.make_optimizer(config.optim, 10)
    return step.Static(llada(cfg), tx, "pretrain", cfg.mask_token_id, 1e-3, 0.0, 1, schedule)


def test_train_loss_adds_the_weighted_aux_losses(moe_model):
    cfg, params = moe_model
    config = tiny_config()
    batch = {"input_ids": jnp.asarray(np.random.default_rng(2).integers(0, 250, (2, 16)), jnp.int32)}
    noise = objectives.get("pretrain").noise(batch, jax.random.PRNGKey(3), None, mask_id=cfg.mask_token_id,
                                                   eps=1e-3)
    w = dataclass_replace(MOE, load_balance_weight=0.5, z_loss_weight=0.25)
    zero = dataclass_replace(MOE, load_balance_weight=0.0, z_loss_weight=0.0)
    fn = jax.jit(step.loss_fn, static_argnums=4)
    (lw, mw), (l0, m0) = (fn(params, batch, noise, None, _static(cfg.replace(moe=c), config)) for c in (w, zero))
    lb, z = float(mw["moe_load_balance"]), float(mw["moe_z_loss"])
    assert lb > 0 and z > 0 and float(m0["moe_load_balance"]) == lb
    assert abs(float(lw) - float(l0) - (0.5 * lb + 0.25 * z)) < 1e-5


def _loss_and_grads(cfg, params, mesh_cfg, devices):
    """The jitted training loss and gradients of one batch with params and batch sharded on the mesh."""
    mesh = sharding.make_mesh(mesh_cfg, devices)
    st = _static(cfg, tiny_config())
    _, shardings = train_state.state_shardings(st.model, st.tx, mesh)
    batch = sharding.global_batch({"input_ids": np.random.default_rng(4).integers(0, 250, (8, 16)).astype(np.int32)},
                                  mesh, 8)
    noise = objectives.get("pretrain").noise(batch, jax.random.PRNGKey(5), None, mask_id=cfg.mask_token_id,
                                                   eps=1e-3)
    fn = jax.jit(jax.value_and_grad(step.loss_fn, has_aux=True), static_argnums=4)
    with jax.set_mesh(mesh), sharding.logical_rules_context():
        (loss, m), grads = fn(jax.device_put(params, shardings["params"]), batch, noise, None, st)
    return shardings["params"], jax.device_get((loss, m, grads))


def test_expert_parallel_mesh_matches_one_device(moe_model):
    """fsdp=2 x expert=4 on 8 devices: the experts split over expert, the batch over both;
    the training loss, aux losses and gradients are those of one device."""
    cfg, params = moe_model
    _, (l1, m1, g1) = _loss_and_grads(cfg, params, dict(data=1, fsdp=1, tensor=1), jax.devices()[:1])
    sh, (l8, m8, g8) = _loss_and_grads(cfg, params, dict(data=1, fsdp=2, expert=4, tensor=1), jax.devices())
    assert sh["blocks"]["moe"]["experts_gate"].spec == P(None, "expert", "fsdp", "tensor")
    assert sh["blocks"]["moe"]["experts_gate"].shard_shape((2, 4, 64, 32)) == (2, 1, 32, 32)
    assert abs(float(l8) - float(l1)) < 1e-5 * abs(float(l1))
    for k in ("moe_load_balance", "moe_z_loss"):
        assert abs(float(m8[k]) - float(m1[k])) < 1e-5 * abs(float(m1[k])), k
    diffs = jax.tree_util.tree_map(lambda a, b: float(np.max(np.abs(a - b))), g1, g8)
    assert max(jax.tree_util.tree_leaves(diffs)) < 1e-5


def test_lora_on_moe_adapts_attention_and_dense_mlp_only():
    cfg = LLaDAConfig.tiny(n_layers=3, moe=MOE, lora=LoRAConfig(rank=4))
    shapes = jax.eval_shape(lambda r: init_params(cfg, r), jax.random.PRNGKey(0))
    names = {"/".join(str(getattr(k, "key", k)) for k in path)
             for path, _ in jax.tree_util.tree_flatten_with_path(shapes)[0] if "lora" in str(path[-1])}
    assert "blocks/q_proj_lora_a" in names and "dense_blocks/ff_proj_lora_b" in names
    assert not any("/moe/" in n for n in names)  # experts, router and shared expert are not adapted


def test_flops_count_the_active_parameters():
    cfg = LLaDAConfig.tiny(n_layers=3, moe=MOE)
    dense = LLaDAConfig.tiny(n_layers=3)
    e = 64
    # two MoE layers: router + 2 experts of 32 + a shared 16 instead of a 128-wide MLP
    assert flops.matmul_params(dense) - flops.matmul_params(cfg) == 2 * (3 * e * 128 - (e * 4 + 3 * e * (2 * 32 + 16)))


@pytest.mark.parametrize("change, message", [
    (dict(num_experts_per_tok=5), r"moe\.num_experts_per_tok=5: expected an integer in \[1, num_experts=4\]"),
    (dict(first_k_dense=3), r"moe\.first_k_dense=3: expected an integer in \[0, n_layers=3\)"),
    (dict(dispatch="megablox"), r"moe\.dispatch='megablox': expected one of \('ragged', 'dense'\)"),
    (dict(n_group=3), r"moe\.n_group=3: expected a divisor of num_experts=4"),
    (dict(score_function="relu"), r"moe\.score_function='relu'"),
])
def test_config_rules_name_the_field(change, message):
    with pytest.raises(ValueError, match=message):
        LLaDAConfig.tiny(n_layers=3, moe=dataclass_replace(MOE, **change))
    assert LLaDAConfig.tiny(moe={"num_experts": 4}).moe.enabled  # from run.json: a dict
