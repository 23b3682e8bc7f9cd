"""The model against the published implementation's logits, and its invariants."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from llada_jax.interop import hf
from llada_jax.model import params as model_params
from llada_jax.model import KVCache, LLaDA, LLaDAConfig, init_params, param_count, rope_tables, apply_rope


def _golden(golden_dir):
    data = np.load(golden_dir / "llada-tiny-logits.npz")
    return data["input_ids"], data["logits"]


@pytest.mark.parametrize("scan_layers", [True, False])
def test_logits_match_published_model(golden_dir, scan_layers):
    config, params = hf.load_pretrained(str(golden_dir / "llada-tiny"), scan_layers=scan_layers)
    ids, want = _golden(golden_dir)
    got = LLaDA(config).apply({"params": params}, jnp.asarray(ids))
    assert got.dtype == jnp.float32 and got.shape == want.shape
    np.testing.assert_allclose(np.asarray(got), want, atol=3e-5, rtol=1e-5)


def test_all_ones_mask_equals_no_mask(golden_model, golden_dir):
    model, params = golden_model
    ids, want = _golden(golden_dir)
    got = model.apply({"params": params}, jnp.asarray(ids), jnp.ones(ids.shape, jnp.int32))
    np.testing.assert_allclose(np.asarray(got), want, atol=3e-5, rtol=1e-5)


def test_llada_8b_parameter_count_without_allocating():
    config = LLaDAConfig.llada_8b()
    shapes = jax.eval_shape(lambda: init_params(config, jax.random.key(0)))
    assert param_count(shapes) == 8_015_581_184
    non_embedding = param_count(shapes) - param_count(shapes["wte"]) - param_count(shapes["ff_out"])
    assert non_embedding == 6_979_588_096
    assert shapes["blocks"]["q_proj"].shape == (32, 4096, 32, 128)


def test_small_inits_compile_fast_with_the_optimised_values():
    """compile_init picks -O0 up to FAST_COMPILE_INIT_PARAMS output values; init_params' values
    then equal the optimised program's to the last bit, and under jit it is the same function."""

    class Lowered:  # what compile_init reads of a `jit(...).lower(...)`
        def __init__(self, n):
            self.out_info = {"a": jax.ShapeDtypeStruct((n - 1,), jnp.float32), "b": jax.ShapeDtypeStruct((), jnp.int32)}

        def compile(self, compiler_options=None):
            return compiler_options

    limit = model_params.FAST_COMPILE_INIT_PARAMS
    assert model_params.compile_init(Lowered(limit)) == {"xla_backend_optimization_level": 0}
    assert model_params.compile_init(Lowered(limit + 1)) is None
    params_only = {"w": jax.ShapeDtypeStruct((limit,), jnp.float32)}  # the optimizer state's values not counted
    assert model_params.compile_init(Lowered(3 * limit), params_only) == {"xla_backend_optimization_level": 0}
    config, key = LLaDAConfig.tiny(), jax.random.PRNGKey(3)
    fast = init_params(config, key)
    lowered = jax.jit(lambda r: nn.unbox(LLaDA(config).init(r, jnp.zeros((1, 8), jnp.int32))["params"])).lower(key)
    optimised = lowered.compile(compiler_options={"xla_backend_optimization_level": 3})(key)
    traced = jax.jit(lambda r: init_params(config, r))(key)
    for a, b, c in zip(*map(jax.tree_util.tree_leaves, (fast, optimised, traced))):
        np.testing.assert_allclose(a, b, rtol=0, atol=float(np.spacing(np.float32(np.abs(b).max()))))
        np.testing.assert_array_equal(a, c)


def test_every_parameter_has_logical_axes():
    config = LLaDAConfig.tiny()
    boxed = jax.eval_shape(lambda: LLaDA(config).init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32)))
    specs = nn.get_partition_spec(boxed)["params"]
    leaves = jax.tree_util.tree_leaves(specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
    assert len(leaves) == len(jax.tree_util.tree_leaves(nn.unbox(boxed)))
    assert specs["wte"] == jax.sharding.PartitionSpec("vocab", "embed")
    assert specs["blocks"]["q_proj"] == jax.sharding.PartitionSpec("layers", "embed", "heads", "head_dim")
    assert specs["blocks"]["k_proj"] == jax.sharding.PartitionSpec("layers", "embed", "kv_heads", "head_dim")
    assert specs["blocks"]["ff_out"] == jax.sharding.PartitionSpec("layers", "mlp", "embed")
    assert specs["ff_out"] == jax.sharding.PartitionSpec("embed", "vocab")


@pytest.mark.parametrize("field,value,match", [
    ("d_model", 66, "n_heads"),
    ("n_kv_heads", 3, "n_kv_heads=3"),
    ("mask_token_id", 256, "mask_token_id=256"),
    ("embedding_size", 100, "embedding_size=100"),
    ("dtype", "float64", "dtype='float64'"),
    ("remat_policy", "sometimes", "remat_policy='sometimes'"),
    ("n_layers", 0, "n_layers=0"),
    ("mlp_chunk", -1, "mlp_chunk=-1"),
])
def test_config_validation_names_field_and_value(field, value, match):
    with pytest.raises(ValueError, match=match):
        LLaDAConfig.tiny(**{field: value})


def test_rope_rotate_half_layout():
    # Head dim 4: pairs are (0, 2) and (1, 3), not interleaved neighbours.
    x = jnp.arange(1.0, 5.0).reshape(1, 1, 1, 4)
    pos = jnp.array([[3]])
    cos, sin = rope_tables(pos, 4, 10000.0)
    inv = 1.0 / 10000.0 ** (np.arange(0, 4, 2) / 4)
    ang = 3 * np.concatenate([inv, inv])
    want = np.array([1, 2, 3, 4]) * np.cos(ang) + np.array([-3, -4, 1, 2]) * np.sin(ang)
    np.testing.assert_allclose(np.asarray(apply_rope(x, cos, sin)).ravel(), want, rtol=1e-6)


@pytest.fixture(scope="module")
def tiny():
    config = LLaDAConfig.tiny()
    return config, init_params(config, jax.random.key(1))


def test_bidirectional_and_causal(tiny):
    config, params = tiny
    ids = jax.random.randint(jax.random.key(2), (1, 10), 0, 250)
    changed = ids.at[0, 9].set((ids[0, 9] + 1) % 250)
    for causal, moves in ((False, True), (True, False)):
        model = LLaDA(dataclasses.replace(config, causal=causal))
        a = model.apply({"params": params}, ids)
        b = model.apply({"params": params}, changed)
        # Changing the last token moves earlier logits only without the causal mask.
        assert bool(jnp.any(jnp.abs(a[0, :9] - b[0, :9]) > 1e-4)) == moves


def test_padding_mask_hides_pad_keys_and_all_masked_rows_are_finite(tiny):
    config, params = tiny
    model = LLaDA(config)
    ids = jax.random.randint(jax.random.key(3), (1, 6), 0, 250)
    padded = jnp.concatenate([jnp.full((1, 3), config.eos_token_id), ids], axis=1)
    mask = jnp.array([[0, 0, 0, 1, 1, 1, 1, 1, 1]])
    alone = model.apply({"params": params}, ids)
    with_pad = model.apply({"params": params}, padded, mask)
    # RoPE is relative, so shifting by the padding leaves the real tokens' logits unchanged.
    np.testing.assert_allclose(np.asarray(with_pad[:, 3:]), np.asarray(alone), atol=1e-4)
    without_mask = model.apply({"params": params}, padded)
    assert float(jnp.max(jnp.abs(without_mask[:, 3:] - alone))) > 1e-3
    nothing = model.apply({"params": params}, padded, jnp.zeros_like(mask))
    assert bool(jnp.all(jnp.isfinite(nothing)))


def test_output_positions_and_kv_cache_equal_full_forward(tiny):
    config, params = tiny
    model = LLaDA(config)
    ids = jax.random.randint(jax.random.key(4), (2, 12), 0, 250)
    full, kv = model.apply({"params": params}, ids, return_kv=True)
    assert kv.k.shape == (config.n_layers, 2, 12, config.n_kv_heads, config.head_dim)
    pos = jnp.array([[4, 5, 6, 7], [0, 3, 11, 2]])
    sub = model.apply({"params": params}, ids, output_positions=pos)
    np.testing.assert_allclose(np.asarray(sub), np.asarray(jnp.take_along_axis(full, pos[..., None], 1)),
                               atol=1e-5)
    # Block 4..8 as queries against cached keys/values of the other positions.
    outside = jnp.array([0, 1, 2, 3, 8, 9, 10, 11])
    cache = KVCache(kv.k[:, :, outside], kv.v[:, :, outside])
    block = model.apply({"params": params}, ids[:, 4:8], positions=jnp.broadcast_to(jnp.arange(4, 8), (2, 4)),
                        kv_cache=cache)
    np.testing.assert_allclose(np.asarray(block), np.asarray(full[:, 4:8]), atol=1e-5)


@pytest.mark.parametrize("policy", ["none", "full"])
def test_straight_line_layers_equal_the_scanned_loop(tiny, policy):
    """scan_unroll: the stacked layers as straight-line code (the default up to 8 layers) and
    as a rolled loop (1) or a partly unrolled one (2 of 3) give the same logits, KV cache and
    gradients, on one parameter tree; 0 picks straight-line code by depth."""
    from llada_jax.model.transformer import UNROLL_LAYERS

    config, params = tiny
    config = config.replace(n_layers=3, remat_policy=policy)
    params = init_params(config, jax.random.key(6))
    ids = jax.random.randint(jax.random.key(7), (2, 8), 0, 250)

    def loss(p, cfg):
        logits, kv = LLaDA(cfg).apply({"params": p}, ids, return_kv=True)
        return jnp.mean(logits ** 2) + jnp.mean(kv.k ** 2), (logits, kv)

    grad_fn = jax.jit(jax.value_and_grad(loss, has_aux=True), static_argnums=1)
    (val, (logits, kv)), grad = grad_fn(params, config)  # scan_unroll=0: 3 <= UNROLL_LAYERS layers, straight-line
    assert config.scan_unroll == 0 and config.n_layers <= UNROLL_LAYERS
    assert kv.k.shape == (3, 2, 8, config.n_kv_heads, config.head_dim)
    for unroll in (1, 2):
        (v, (lg, k)), g = grad_fn(params, config.replace(scan_unroll=unroll))
        np.testing.assert_allclose(float(v), float(val), rtol=1e-6)
        np.testing.assert_allclose(np.asarray(lg), np.asarray(logits), atol=1e-5)
        np.testing.assert_allclose(np.asarray(k.k), np.asarray(kv.k), atol=1e-5)
        for a, b in zip(jax.tree_util.tree_leaves(g), jax.tree_util.tree_leaves(grad)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
    # the straight-line program has no loop; the rolled one has
    hlo = jax.jit(lambda p, cfg: LLaDA(cfg).apply({"params": p}, ids), static_argnums=1).lower
    assert "while" not in hlo(params, config).as_text() and "while" in hlo(params, config.replace(scan_unroll=1)).as_text()
    with pytest.raises(ValueError, match="LLaDAConfig.scan_unroll=-1: expected an integer >= 0"):
        config.replace(scan_unroll=-1)


@pytest.mark.parametrize("policy", ["full", "dots"])
def test_remat_keeps_values_and_gradients(tiny, policy):
    config, params = tiny
    ids = jax.random.randint(jax.random.key(5), (2, 8), 0, 250)

    def loss(p, cfg):
        return jnp.mean(LLaDA(cfg).apply({"params": p}, ids) ** 2)

    base_val, base_grad = jax.value_and_grad(loss)(params, config)
    val, grad = jax.value_and_grad(loss)(params, config.replace(remat_policy=policy))
    np.testing.assert_allclose(float(val), float(base_val), rtol=1e-6)
    for a, b in zip(jax.tree_util.tree_leaves(grad), jax.tree_util.tree_leaves(base_grad)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)


@pytest.mark.parametrize("lora_rank", [0, 4])
def test_mlp_chunk_keeps_values_and_gradients(tiny, lora_rank):
    """The MLP over sequence chunks (rematerialised) is the same function: logits and every
    gradient equal the unchunked model's, with a LoRA adapter on the MLP too; a chunk that does
    not divide L falls back to one call."""
    from llada_jax.model.adapters.lora import LoRAConfig

    config, params = tiny
    config = config.replace(remat_policy="full", lora=LoRAConfig(rank=lora_rank))
    if lora_rank:  # adapters with non-zero B, so their gradients and update are not trivial
        params = LLaDA(config).init(jax.random.key(1), jnp.zeros((1, 8), jnp.int32))["params"]
        params = jax.tree_util.tree_map(lambda x: x + 0.01, nn.unbox(params))
    ids = jax.random.randint(jax.random.key(5), (2, 12), 0, 250)

    def loss(p, cfg):
        return jnp.mean(LLaDA(cfg).apply({"params": p}, ids) ** 2)

    base_val, base_grad = jax.value_and_grad(loss)(params, config)
    for chunk in (4, 5):  # 12 = 3 chunks of 4; 5 does not divide 12
        val, grad = jax.value_and_grad(loss)(params, config.replace(mlp_chunk=chunk))
        np.testing.assert_allclose(float(val), float(base_val), rtol=1e-6)
        for a, b in zip(jax.tree_util.tree_leaves(grad), jax.tree_util.tree_leaves(base_grad)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)


def test_bf16_compute_with_fp32_params(golden_dir):
    config, params = hf.load_pretrained(str(golden_dir / "llada-tiny"))
    config = config.replace(dtype="bfloat16")
    ids, want = _golden(golden_dir)
    assert params["wte"].dtype == np.float32
    got = LLaDA(config).apply({"params": params}, jnp.asarray(ids))
    assert got.dtype == jnp.float32
    # bf16 activations: about 3 significant digits on logits of magnitude ~10.
    assert float(jnp.max(jnp.abs(got - want))) < 0.1 * float(np.abs(want).max())
    assert float(jnp.mean(jnp.argmax(got, -1) == want.argmax(-1))) > 0.9
