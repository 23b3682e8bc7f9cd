"""Every attention implementation against the dense reference; the chunked loss."""

import functools
import json
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from llada_jax.model import attention
from llada_jax.objectives import diffusion
from llada_jax.model.attention import KeyMask, chunked, cudnn, dense, patterns, splash
from llada_jax.model import KVCache, LLaDA, LLaDAConfig, init_params
from llada_jax.sampling import generate

B, H = 2, 4


def _qkv(l, s, kv_heads, dtype=jnp.float32, d=8):
    ks = jax.random.split(jax.random.key(l * 100 + s), 3)
    q = jax.random.normal(ks[0], (B, l, H, d), dtype)
    k = jax.random.normal(ks[1], (B, s, kv_heads, d), dtype)
    v = jax.random.normal(ks[2], (B, s, kv_heads, d), dtype)
    return q, k, v


def _left_pad(s, pads):  # row i: its first pads[i] keys are padding (all of them: an all-masked row)
    return KeyMask(valid_BxS=jnp.arange(s)[None, :] >= jnp.array(pads)[:, None])


# (name, L queries, S keys, KV heads, key mask, causal). L = 11 and S = 13 divide no block.
CASES = [
    ("no_mask", 11, 11, H, KeyMask(), False),
    ("right_padding", 11, 11, H, KeyMask(lengths_B=jnp.array([7, 11])), False),
    ("left_padding_and_all_masked_row", 11, 11, 2, _left_pad(11, [3, 11]), False),
    ("gqa_one_kv_head", 11, 11, 1, KeyMask(), False),
    ("cache", 5, 13, 2, KeyMask(valid_BxS=jnp.arange(13)[None, :] % 3 != jnp.array([[1], [2]])), False),
    ("causal", 11, 11, 2, KeyMask(lengths_B=jnp.array([9, 11])), True),
]


def _value_and_grads(fn, q, k, v, mask, causal):
    def loss(q, k, v):  # a fixed random projection of the output: every element matters
        out = fn(q, k, v, mask, causal=causal)
        w = jax.random.normal(jax.random.key(7), out.shape, jnp.float32)
        return jnp.sum(out.astype(jnp.float32) * w), out
    (_, out), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(q, k, v)
    return [np.asarray(x, np.float32) for x in (out, *grads)]


def _assert_close(got, want, tol):
    for name, a, b in zip(("out", "dq", "dk", "dv"), got, want):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol, err_msg=name)


SMALL_BLOCKS = functools.partial(chunked.attention, block_q=4, block_k=3)


@pytest.mark.parametrize("name,l,s,kvh,mask,causal", CASES, ids=[c[0] for c in CASES])
def test_chunked_equals_dense_fp32(name, l, s, kvh, mask, causal):
    q, k, v = _qkv(l, s, kvh)
    want = _value_and_grads(dense.attention, q, k, v, mask, causal)
    _assert_close(_value_and_grads(SMALL_BLOCKS, q, k, v, mask, causal), want, 1e-5)
    if name == "cache":  # default blocks (larger than the sequence: one block, no padding)
        _assert_close(_value_and_grads(chunked.attention, q, k, v, mask, causal), want, 1e-5)


# (name, L, S, KV heads, key mask, pattern): every pattern with padding, GQA, odd lengths.
PATTERN_CASES = [
    ("block_causal_left_padding_gqa", 11, 11, 1, _left_pad(11, [3, 11]), patterns.block_causal(4)),
    ("block_causal_cache", 5, 13, 2, KeyMask(lengths_B=jnp.array([10, 13])), patterns.block_causal(4)),
    ("causal_left_padding", 11, 11, 2, _left_pad(11, [3, 0]), patterns.CAUSAL),
    ("block_diffusion_odd_half", 18, 18, 2, KeyMask(lengths_B=jnp.array([18, 13])), patterns.block_diffusion(9, 3)),
    ("block_diffusion_block_1", 14, 14, 4, _left_pad(14, [2, 0]), patterns.block_diffusion(7, 1)),
]
BF16 = ("block_diffusion_odd_half",)  # bf16 inputs too (GQA, right padding, odd half)
# kernel -> the cases it runs: splash (interpret mode is slow) on one case per non-native
# pattern kind, cuDNN's explicit fallback (its native forms: test_cudnn_arguments_*) on one.
PATTERN_KERNELS = {"chunked": (SMALL_BLOCKS, [c[0] for c in PATTERN_CASES]),
                   "cudnn_fallback": (cudnn.attention, ["block_causal_cache"]),
                   "splash": (splash.attention, ["block_causal_left_padding_gqa", "block_diffusion_odd_half"])}


def _all_value_and_grads(fn, names, dtypes=("float32",)):
    """{(name, dtype): [out, dq, dk, dv]} of `fn` on the named PATTERN_CASES: one program."""
    cases = {(c[0], dt): c for c in PATTERN_CASES if c[0] in names for dt in dtypes if dt == "float32" or c[0] in BF16}

    def run(inputs):
        out = {}
        for key, (name, l, s, kvh, mask, pattern) in cases.items():
            def loss(q, k, v, mask=mask, pattern=pattern):
                o = fn(q, k, v, mask, pattern=pattern)
                w = jax.random.normal(jax.random.key(7), o.shape, jnp.float32)
                return jnp.sum(o.astype(jnp.float32) * w), o
            (_, o), grads = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(*inputs[key])
            out[key] = [x.astype(jnp.float32) for x in (o, *grads)]
        return out

    inputs = {key: tuple(x.astype(key[1]) for x in _qkv(c[1], c[2], c[3])) for key, c in cases.items()}
    return jax.tree_util.tree_map(np.asarray, jax.jit(run)(inputs))


@pytest.fixture(scope="module")
def dense_patterns():
    return _all_value_and_grads(dense.attention, [c[0] for c in PATTERN_CASES], ("float32", "bfloat16"))


@pytest.mark.parametrize("kernel", PATTERN_KERNELS)
def test_every_kernel_equals_dense_for_every_pattern(dense_patterns, kernel):
    fn, names = PATTERN_KERNELS[kernel]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = _all_value_and_grads(fn, names, ("float32", "bfloat16") if kernel == "chunked" else ("float32",))
    if kernel == "cudnn_fallback":
        assert any("using attention='chunked'" in str(w.message) for w in caught)
    assert {n for n, _ in got} == set(names)
    for key, values in got.items():
        # bf16 inputs: about 2 bf16 ulps (see test_chunked_equals_dense_bf16)
        tol = 1e-5 if key[1] == "float32" else 3e-2
        for what, a, b in zip(("out", "dq", "dk", "dv"), values, dense_patterns[key]):
            np.testing.assert_allclose(a, b, rtol=tol, atol=tol, err_msg=f"{key[0]} {key[1]} {what}")


def test_patterns_are_bd3lms_masks_and_chunked_skips_empty_blocks():
    # block_diff_mask of kuleshov-group/bd3lms models/dit.py, n = 4, block 2 (x_t | x_0)
    want = np.array([[1, 1, 0, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0, 0, 0], [0, 0, 1, 1, 1, 1, 0, 0],
                     [0, 0, 1, 1, 1, 1, 0, 0], [0, 0, 0, 0, 1, 1, 0, 0], [0, 0, 0, 0, 1, 1, 0, 0],
                     [0, 0, 0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 1, 1, 1, 1]], bool)
    np.testing.assert_array_equal(patterns.block_diffusion(4, 2).dense(8, 8), want)
    np.testing.assert_array_equal(patterns.block_causal(2).dense(4, 4), [[1, 1, 0, 0], [1, 1, 0, 0], [1] * 4, [1] * 4])
    # the 2L training mask at L = 4096, blocks of 512: chunked computes 40 of the 256 block pairs
    assert chunked.work_fraction(patterns.block_diffusion(4096, 16), 8192, 8192) == pytest.approx(
        (8 * 9 / 2 + 8 + 8 * 7 / 2 + 8) / 256)
    assert chunked.work_fraction(patterns.BIDIRECTIONAL, 8192, 8192) == 1.0
    with pytest.raises(ValueError, match="block_size=5 must divide the sequence length 12"):
        patterns.block_diffusion(12, 5)
    with pytest.raises(ValueError, match="'block_diffusion' over 2 x 6 tokens: got L=11, S=11"):
        attention.attend("dense", *_qkv(11, 11, 2), pattern=patterns.block_diffusion(6, 3))


def test_chunked_equals_dense_bf16():
    # bf16 inputs: both compute scores in fp32; the probabilities are cast to bf16 before
    # the value product (dense after normalising, chunked before), so about 2 bf16 ulps.
    q, k, v = _qkv(11, 11, 2, jnp.bfloat16)
    mask = KeyMask(valid_BxS=jnp.arange(11)[None, :] >= jnp.array([[3], [0]]))
    want = _value_and_grads(dense.attention, q, k, v, mask, False)
    got = _value_and_grads(SMALL_BLOCKS, q, k, v, mask, False)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=3e-2, atol=3e-2)


SPLASH_CASES = [c for c in CASES if c[0] in ("left_padding_and_all_masked_row", "cache", "causal")]


@pytest.mark.parametrize("name,l,s,kvh,mask,causal", SPLASH_CASES, ids=[c[0] for c in SPLASH_CASES])
def test_splash_in_interpret_mode_equals_dense(name, l, s, kvh, mask, causal):
    q, k, v = _qkv(l, s, kvh)
    want = _value_and_grads(dense.attention, q, k, v, mask, causal)
    _assert_close(_value_and_grads(splash.attention, q, k, v, mask, causal), want, 1e-5)


def test_splash_under_a_mesh_is_shard_mapped_over_the_batch():
    from llada_jax.parallel import sharding

    mesh = sharding.make_mesh(dict(data=1, fsdp=2, tensor=2), jax.devices()[:4])
    q, k, v = _qkv(11, 11, 2)
    mask = KeyMask(lengths_B=jnp.array([5, 11]))
    with jax.set_mesh(mesh):
        got = jax.jit(lambda q, k, v: splash.attention(q, k, v, mask))(q, k, v)
    np.testing.assert_allclose(np.asarray(got), np.asarray(dense.attention(q, k, v, mask)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mask,causal", [(KeyMask(), False), (KeyMask(lengths_B=jnp.array([6, 11])), False),
                                         (KeyMask(lengths_B=jnp.array([6, 11])), True)])
def test_cudnn_arguments_mean_what_dense_computes(mask, causal):
    # No GPU here: the same arguments through jax's XLA implementation, which defines them.
    q, k, v = _qkv(11, 11, 2)
    got = jax.nn.dot_product_attention(q, k, v, implementation="xla", **cudnn.cudnn_arguments(mask, causal))
    np.testing.assert_allclose(np.asarray(got), np.asarray(dense.attention(q, k, v, mask, causal=causal)),
                               rtol=1e-5, atol=1e-5)


def test_cudnn_refuses_cpu_and_fp32_and_falls_back_for_boolean_masks():
    q, k, v = _qkv(11, 11, 2, jnp.bfloat16)
    with pytest.raises(ValueError, match="attention='cudnn' needs a GPU, the backend is 'cpu'"):
        jax.eval_shape(lambda: cudnn.attention(q, k, v, KeyMask()))
    mask = _left_pad(11, [3, 0])
    with pytest.warns(UserWarning, match="using attention='chunked'"):
        got = cudnn.attention(q, k, v, mask)
    np.testing.assert_array_equal(np.asarray(got, np.float32), np.asarray(chunked.attention(q, k, v, mask), np.float32))


def test_bad_arguments_fail_at_trace_time():
    q, k, v = _qkv(11, 13, 2)
    with pytest.raises(ValueError, match="attention='flash': expected one of"):
        attention.attend("flash", q, k, v)
    with pytest.raises(ValueError, match="causal=True needs as many keys as queries"):
        attention.attend("dense", q, k, v, causal=True)
    with pytest.raises(ValueError, match=r"key mask shape \(2, 11\), expected \(B, S\) = \(2, 13\)"):
        attention.attend("chunked", q, k, v, KeyMask(valid_BxS=jnp.ones((2, 11), bool)))
    with pytest.raises(ValueError, match="LLaDAConfig.attention='flash'"):
        LLaDAConfig.tiny(attention="flash")


@pytest.fixture(scope="module")
def tiny():
    config = LLaDAConfig.tiny(n_heads=4, n_kv_heads=2)
    return config, init_params(config, jax.random.key(1))


def test_model_with_chunked_attention_equals_dense_on_every_path(tiny):
    config, params = tiny
    dense_m, chunked_m = LLaDA(config), LLaDA(config.replace(attention="chunked"))
    apply_d, apply_c = jax.jit(dense_m.apply), jax.jit(chunked_m.apply)
    ids = jax.random.randint(jax.random.key(4), (2, 12), 0, 250)
    mask = jnp.arange(12)[None, :] >= jnp.array([[3], [0]])
    for kw in (dict(), dict(attention_mask=mask), dict(kv_lengths=jnp.array([5, 12])),
               dict(output_positions=jnp.array([[4, 5], [0, 11]]))):
        np.testing.assert_allclose(np.asarray(apply_c({"params": params}, ids, **kw)),
                                   np.asarray(apply_d({"params": params}, ids, **kw)), atol=1e-5, rtol=1e-5)
    # kv_lengths is right padding expressed as lengths: the same as the boolean mask
    np.testing.assert_array_equal(
        np.asarray(dense_m.apply({"params": params}, ids, kv_lengths=jnp.array([5, 12]))),
        np.asarray(dense_m.apply({"params": params}, ids, jnp.arange(12)[None, :] < jnp.array([[5], [12]]))))
    _, kv = dense_m.apply({"params": params}, ids, return_kv=True)
    outside = jnp.array([0, 1, 2, 3, 8, 9, 10, 11])
    cache = KVCache(kv.k[:, :, outside], kv.v[:, :, outside])
    kw = dict(positions=jnp.broadcast_to(jnp.arange(4, 8), (2, 4)), kv_cache=cache,
              attention_mask=jnp.concatenate([mask[:, outside], jnp.ones((2, 4), bool)], axis=1))
    np.testing.assert_allclose(np.asarray(chunked_m.apply({"params": params}, ids[:, 4:8], **kw)),
                               np.asarray(dense_m.apply({"params": params}, ids[:, 4:8], **kw)), atol=1e-5, rtol=1e-5)


def test_golden_logits_and_generate_with_chunked_attention(golden_model, golden_dir):
    model, params = golden_model
    chunked_m = LLaDA(model.config.replace(attention="chunked"))
    data = np.load(golden_dir / "llada-tiny-logits.npz")
    got = chunked_m.apply({"params": params}, jnp.asarray(data["input_ids"]))
    np.testing.assert_allclose(np.asarray(got), data["logits"], atol=3e-5, rtol=1e-5)
    c = json.loads((golden_dir / "llada-tiny-generate.json").read_text())[1]  # two blocks of 8
    out = generate(chunked_m, params, np.array(c["prompt"]), **c["options"])
    np.testing.assert_array_equal(np.asarray(out), np.array(c["tokens"]))


@pytest.mark.parametrize("kind", ["pretrain", "sft"])
def test_chunked_cross_entropy_equals_full_logits(tiny, kind):
    config, params = tiny
    model = LLaDA(config)
    ids = jax.random.randint(jax.random.key(5), (2, 13), 0, 250)
    masked = jax.random.bernoulli(jax.random.key(6), 0.5, ids.shape)
    p_mask = jnp.full(ids.shape, 0.5)
    prompt = jnp.arange(13)[None, :] < jnp.array([[3], [5]])
    valid = jnp.arange(13)[None, :] < jnp.array([[13], [9]])

    def loss(p, chunk):
        if chunk:
            logits = diffusion.ChunkedLogits(*model.apply({"params": p}, ids, return_hidden=True), chunk=chunk)
        else:
            logits = model.apply({"params": p}, ids)
        if kind == "sft":
            return diffusion.sft_loss(logits, ids, masked & ~prompt, p_mask, prompt)
        return diffusion.pretrain_loss(logits, ids, masked & valid, p_mask, valid)

    grad_fn = jax.jit(jax.value_and_grad(loss, has_aux=True), static_argnums=1)
    (want, wm), want_g = grad_fn(params, 0)
    (got, gm), got_g = grad_fn(params, 4)  # 4 does not divide 13
    np.testing.assert_allclose(float(got), float(want), rtol=1e-6)
    assert int(gm["num_masked"]) == int(wm["num_masked"])
    np.testing.assert_allclose(float(gm["masked_accuracy"]), float(wm["masked_accuracy"]))
    for a, b in zip(jax.tree_util.tree_leaves(got_g), jax.tree_util.tree_leaves(want_g)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_chunked_loss_stores_no_full_logits():
    """The compiled gradient of the chunked loss holds no (B, L, V) array."""
    config = LLaDAConfig.tiny(vocab_size=4096, embedding_size=4096, n_layers=1, attention="chunked")
    params = jax.eval_shape(lambda: init_params(config, jax.random.key(0)))
    ids = jnp.zeros((2, 512), jnp.int32)
    masked = jnp.ones(ids.shape, bool)
    model = LLaDA(config)

    def temp_bytes(chunked_loss):
        def loss(p):
            out = model.apply({"params": p}, ids, return_hidden=chunked_loss)
            logits = diffusion.ChunkedLogits(*out, chunk=64) if chunked_loss else out
            return diffusion.pretrain_loss(logits, ids, masked, jnp.ones(ids.shape))[0]
        return jax.jit(jax.grad(loss)).lower(params).compile().memory_analysis().temp_size_in_bytes

    logits_bytes = 2 * 512 * 4096 * 4
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        full, chunked_ = temp_bytes(False), temp_bytes(True)
    # today's loss keeps the logits, their softmax and gradient (3 copies or more)
    assert full - chunked_ > 2 * logits_bytes
