"""The sampler against the official sampler's outputs and hand-worked stub models."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from llada_jax.sampling import confidence, generate, reveal, sampler

MASK, VOCAB = 31, 32


class CountingStub:
    """Predicts, at every position, the number of revealed tokens in the row (so the final
    token tells at which step a position was revealed), with a fixed per-position peak
    height `heights[j]` that orders the confidences."""

    config = None

    def __init__(self, heights):
        self.heights = tuple(float(h) for h in heights)

    def __eq__(self, other):  # equal stubs share one compiled sampler
        return isinstance(other, CountingStub) and other.heights == self.heights

    def __hash__(self):
        return hash(self.heights)

    def apply(self, variables, x, attention_mask=None, output_positions=None, **unused):
        b, l = x.shape
        count = jnp.sum(x != MASK, axis=1)  # (B,)
        tok = jnp.minimum(count, VOCAB - 2)
        h = jnp.asarray(self.heights)[:l]
        logits = jnp.where(jnp.arange(VOCAB)[None, None, :] == tok[:, None, None], h[None, :, None], 0.0)
        if output_positions is not None:
            logits = jnp.take_along_axis(logits, output_positions[..., None], axis=1)
        return logits


def _run(heights, prompt, **kw):
    kw.setdefault("mask_id", MASK)
    return np.asarray(generate(CountingStub(heights), {}, np.array([prompt]), **kw))[0]


# Positions 2..9 are generated; block 2's heights (2, 8, 4, 6) include the largest one,
# so a sampler that looked right of the current block would reveal position 7 first.
HEIGHTS = [0, 0, 1, 5, 3, 7, 2, 8, 4, 6]


def test_low_confidence_reveals_top_k_per_step_block_by_block():
    out = _run(HEIGHTS, [1, 2], steps=4, gen_length=8, block_length=4)
    # block 1, step 1 (2 revealed so far): top-2 by height are positions 5 and 3 -> token 2;
    # step 2: positions 4 and 2 -> token 4. Block 2: positions 7, 9 -> 6; then 8, 6 -> 8.
    assert out.tolist() == [1, 2, 4, 2, 4, 2, 8, 6, 8, 6]


def test_uneven_schedule_gives_extra_tokens_to_first_steps():
    np.testing.assert_array_equal(reveal.num_transfer_tokens(jnp.array([10, 3]), 4),
                                  [[3, 3, 2, 2], [1, 1, 1, 0]])
    out = _run(HEIGHTS, [1, 2], steps=3, gen_length=8, block_length=8)
    # one block of 8, k = (3, 3, 2): heights 8,7,6 -> token 2; 5,4,3 -> 5; 2,1 -> 8.
    assert out.tolist() == [1, 2, 8, 5, 5, 2, 8, 2, 5, 2]


def test_threshold_reveals_exactly_the_positions_above_it():
    # p(x0) = e^h / (e^h + 31) > 0.9  <=>  h > 5.63: heights 7, 8 and 6 qualify.
    out, stats = generate(CountingStub(HEIGHTS), {}, np.array([[1, 2]]), steps=8, gen_length=8,
                          block_length=4, mask_id=MASK, threshold=0.9, return_stats=True)
    # block 1: step 1 reveals only h=7 (pos 5); then one per step: h5, h3, h1.
    # block 2: step 1 reveals h=8 and h=6 together (pos 7, 9), then h4, h2.
    assert np.asarray(out)[0].tolist() == [1, 2, 5, 3, 4, 2, 9, 6, 8, 6]
    assert stats["model_calls"] == 4 + 3
    assert stats["reveal_step"][0].tolist() == [-1, -1, 3, 1, 2, 0, 6, 4, 5, 4]


def test_threshold_one_reveals_as_scheduled():
    plain = _run(HEIGHTS, [1, 2], steps=4, gen_length=8, block_length=4)
    np.testing.assert_array_equal(_run(HEIGHTS, [1, 2], steps=4, gen_length=8, block_length=4, threshold=1.0),
                                  plain)


def test_infilling_fills_every_hole_in_the_prompt():
    heights = [0, 9, 1, 0, 2, 3, 4, 5]
    out = _run(heights, [1, MASK, MASK, 3], steps=2, gen_length=0)
    # holes at 1 (h9) and 2 (h1), no answer: one per step.
    assert out.tolist() == [1, 2, 3, 3]
    out = _run(heights, [1, MASK, MASK, 3], steps=2, gen_length=4, block_length=4)
    # 2 holes + 4 block masks, k = (3, 3): h9, h5, h4 -> 2; h3, h2, h1 -> 5.
    assert out.tolist() == [1, 2, 5, 3, 5, 5, 2, 2]


def test_random_remasking_is_reproducible_and_follows_the_schedule():
    kw = dict(steps=4, gen_length=8, block_length=4, remasking="random")
    a = _run(HEIGHTS, [1, 2], rng=jax.random.key(0), **kw)
    b = _run(HEIGHTS, [1, 2], rng=jax.random.key(0), **kw)
    np.testing.assert_array_equal(a, b)
    outs = {tuple(_run(HEIGHTS, [1, 2], rng=jax.random.key(s), **kw)) for s in range(6)}
    assert len(outs) > 1
    for out in outs:  # two tokens per step, blocks in order, whatever the order inside
        assert sorted(out[2:6]) == [2, 2, 4, 4] and sorted(out[6:]) == [6, 6, 8, 8]


def test_gumbel_max_samples_the_softmax():
    opt = sampler._Options(1, 1, 1, 1, 1.0, 0.0, "low_confidence", 31, False, False, 0, 0, None, False)
    probs = np.array([0.6, 0.3, 0.1, 0.0])
    logits = jnp.log(jnp.asarray(probs + 1e-30, jnp.float32)).reshape(1, 1, 4)
    draws = jax.vmap(lambda r: reveal.predict(logits, r, opt)[0][0, 0])(jax.random.split(jax.random.key(0), 6000))
    freq = np.bincount(np.asarray(draws), minlength=4) / 6000
    np.testing.assert_allclose(freq, probs, atol=0.02)


def test_confidence_eos_eot_inf_gives_eos_zero_and_renormalises():
    opt = sampler._Options(1, 1, 1, 1, 0.0, 0.0, "low_confidence", 3, False, True, 0, 1, None, False)
    logits = jnp.log(jnp.array([[[0.5, 0.1, 0.3, 0.1], [0.2, 0.1, 0.6, 0.1]]]))
    x0, conf = reveal.predict(logits, jax.random.key(0), opt)
    assert x0.tolist() == [[0, 2]]  # EOS (0) may still win the argmax
    np.testing.assert_allclose(np.asarray(conf), [[0.0, 0.6 / 0.7]], rtol=1e-6)
    opt_inf = opt._replace(logits_eos_inf=True)
    x0, _ = reveal.predict(logits, jax.random.key(0), opt_inf)
    assert x0.tolist() == [[2, 2]]


@pytest.mark.parametrize("vocab", [31, 32, 1000, 4096 + 256])  # no split; splits into 256-wide chunks or fewer
def test_argmax_and_confidence_over_split_vocabularies(vocab):
    """first_argmax is jnp.argmax (the first index of the max, also across chunks) and
    low_confidence the softmax probability of x0, whether or not the vocabulary splits."""
    opt = sampler._Options(1, 1, 1, 1, 0.0, 0.0, "low_confidence", 3, False, False, 0, 1, None, False)
    logits = 4 * jax.random.normal(jax.random.key(vocab), (3, 5, vocab))
    logits = logits.at[0, :, vocab // 3].set(20.0).at[0, :, vocab - 1].set(20.0)  # ties: the first wins
    logits = logits.at[1, :, :].set(-jnp.inf).at[1, :, vocab - 2].set(0.0)  # one finite logit
    x0 = confidence.first_argmax(logits)
    np.testing.assert_array_equal(x0, jnp.argmax(logits, axis=-1))
    conf = confidence.low_confidence(logits, x0, None, opt)
    want = jnp.take_along_axis(jax.nn.softmax(logits, axis=-1), x0[..., None], axis=-1)[..., 0]
    np.testing.assert_allclose(conf, want, rtol=2e-6)


def test_second_call_does_not_compile_again():
    stub = CountingStub(HEIGHTS)
    generate(stub, {}, np.array([[1, 2]]), steps=4, gen_length=8, block_length=4, mask_id=MASK)
    before = sampler._reverse_process._cache_size()
    generate(stub, {}, np.array([[3, 4]]), steps=4, gen_length=8, block_length=4, mask_id=MASK)
    assert sampler._reverse_process._cache_size() == before


@pytest.mark.parametrize("kw,match", [
    (dict(gen_length=10, block_length=4), "block_length=4"),
    (dict(gen_length=8, block_length=4, steps=3), "steps=3"),
    (dict(gen_length=8, block_length=8, steps=9), "steps=9"),
    (dict(remasking="top_p"), "remasking='top_p'"),
    (dict(threshold=0.0), "threshold=0.0"),
    (dict(threshold=1.5), "threshold=1.5"),
    (dict(temperature=-1.0), "temperature=-1.0"),
    (dict(mask_id=300), "mask_id=300"),
    (dict(gen_length=512, block_length=512, steps=8), "max_sequence_length=512"),
    (dict(attention_mask=np.ones((2, 3))), "attention_mask.shape"),
    (dict(gen_length=0), "gen_length=0"),
])
def test_bad_arguments_raise_before_compiling(golden_model, kw, match):
    model, params = golden_model
    args = dict(steps=8, gen_length=8, block_length=8, mask_id=255)
    args.update(kw)
    before = sampler._reverse_process._cache_size()
    with pytest.raises(ValueError, match=match):
        generate(model, params, np.ones((2, 8), np.int32), **args)
    assert sampler._reverse_process._cache_size() == before


def _cases(golden_dir):
    return json.loads((golden_dir / "llada-tiny-generate.json").read_text())


@pytest.mark.parametrize("case", range(5))
def test_matches_official_sampler(golden_model, golden_dir, case):
    model, params = golden_model
    c = _cases(golden_dir)[case]
    out = generate(model, params, np.array(c["prompt"]), **c["options"])
    np.testing.assert_array_equal(np.asarray(out), np.array(c["tokens"]))


def test_left_padded_batch_gives_each_row_its_own_tokens(golden_model):
    _check_rows_alone(*golden_model, (8, 5, 3), steps=8, gen_length=16, block_length=8, mask_id=255)


def _check_rows_alone(model, params, lengths, **kw):
    """A left-padded batch gives each row the tokens its prompt gives alone."""
    rng = np.random.default_rng(0)
    prompts = [rng.integers(0, 250, n) for n in lengths]
    width = max(lengths)
    batch = np.full((len(lengths), width), 250, np.int32)
    mask = np.zeros((len(lengths), width), np.int32)
    for i, p in enumerate(prompts):
        batch[i, width - len(p):], mask[i, width - len(p):] = p, 1
    together = np.asarray(generate(model, params, batch, attention_mask=mask, **kw))
    for i, p in enumerate(prompts):
        alone = np.asarray(generate(model, params, p[None], **kw))
        np.testing.assert_array_equal(together[i, width:], alone[0, len(p):])


def test_temperature_sampling_is_reproducible_and_fills_every_mask(golden_model):
    model, params = golden_model
    kw = dict(steps=8, gen_length=16, block_length=8, mask_id=255, temperature=1.0, cfg_scale=0.5)
    prompt = np.arange(16).reshape(2, 8)
    a = np.asarray(generate(model, params, prompt, rng=jax.random.key(1), **kw))
    b = np.asarray(generate(model, params, prompt, rng=jax.random.key(1), **kw))
    c = np.asarray(generate(model, params, prompt, rng=jax.random.key(2), **kw))
    np.testing.assert_array_equal(a, b)
    assert (a != c).any() and not (a == 255).any()
    np.testing.assert_array_equal(a[:, :8], prompt)


# ---- Approximate KV cache (Fast-dLLM) ----

def _plain_cached_generate(model, params, prompt, attention_mask, *, steps, gen_length, block_length, cache,
                           threshold=None, cfg_scale=0.0, mask_id=255):
    """Facts 6b written out with Python loops and eager calls, independent of the sampler."""
    b, p = prompt.shape
    x = np.concatenate([prompt, np.full((b, gen_length), mask_id)], 1).astype(np.int32)
    am = np.concatenate([attention_mask, np.ones((b, gen_length))], 1).astype(bool)
    prompt_index = x != mask_id
    s = steps // (gen_length // block_length)
    calls = 0
    apply = jax.jit(model.apply, static_argnames=("return_kv",))  # only to avoid eager re-tracing

    def call(ids, key_mask, **kw):
        if cfg_scale > 0:  # both copies in one batch; the cache already holds 2B rows
            un = np.where(prompt_index[:, :ids.shape[1]] if ids.shape[1] == x.shape[1] else False, mask_id, ids)
            ids, key_mask = np.concatenate([ids, un]), np.concatenate([key_mask, key_mask])
            kw = {k: (np.concatenate([v, v]) if k == "positions" else v) for k, v in kw.items()}
        out = apply({"params": params}, jnp.asarray(ids), jnp.asarray(key_mask), **kw)
        logits, kv = out if isinstance(out, tuple) else (out, None)
        logits = np.asarray(logits, np.float64)
        if cfg_scale > 0:
            cond, unc = np.split(logits, 2)
            logits = unc + (cfg_scale + 1) * (cond - unc)
        return logits, kv

    def reveal(block_logits, st, k):
        nonlocal x
        sub = x[:, st:st + block_length]
        x0 = block_logits.argmax(-1)
        z = np.exp(block_logits - block_logits.max(-1, keepdims=True))
        prob = np.take_along_axis(z / z.sum(-1, keepdims=True), x0[..., None], -1)[..., 0]
        conf = np.where(sub == mask_id, prob, -np.inf)
        for r in range(b):
            order = np.argsort(-conf[r], kind="stable")
            chosen = set(order[:k[r]].tolist())
            if threshold is not None:
                chosen |= set(np.nonzero(conf[r] > threshold)[0].tolist())
            for j in chosen:
                if conf[r, j] > -np.inf:
                    x[r, st + j] = x0[r, j]

    for blk in range(gen_length // block_length):
        st, en = p + blk * block_length, p + (blk + 1) * block_length
        n = (x[:, st:en] == mask_id).sum(1)
        sched = [n // s + (i < n % s) for i in range(s)]
        if threshold is not None:
            sched = [np.maximum(k, 1) for k in sched]
        logits, kv = call(x, am, return_kv=True)  # block start: full pass fills the cache
        calls += 1
        reveal(logits[:, st:en], st, sched[0])
        for i in range(1, s):
            if threshold is not None and not (x[:, st:en] == mask_id).any():
                break
            if cache == "prefix":
                pos = np.broadcast_to(np.arange(st, x.shape[1]), (b, x.shape[1] - st))
                kvc = type(kv)(kv.k[:, :, :st], kv.v[:, :, :st])
                logits, _ = call(x[:, st:], am, positions=pos, kv_cache=kvc)
            else:
                pos = np.broadcast_to(np.arange(st, en), (b, block_length))
                outside = np.ones(x.shape[1], bool)
                outside[st:en] = False
                logits, _ = call(x[:, st:en], np.concatenate([am & outside, np.ones((b, block_length), bool)], 1),
                                 positions=pos, kv_cache=kv)
            calls += 1
            reveal(logits[:, :block_length], st, sched[i])
    return x, calls


@pytest.mark.parametrize("cache,threshold,cfg", [("prefix", None, 0.0), ("dual", None, 0.0),
                                                 ("prefix", 0.5, 0.0), ("dual", 0.5, 1.0)])
def test_cached_sampler_equals_plain_implementation_of_facts_6b(golden_model, cache, threshold, cfg):
    model, params = golden_model
    rng = np.random.default_rng(1)
    prompt = rng.integers(0, 250, (2, 6)).astype(np.int32)
    prompt[1, :2] = 250
    mask = np.ones((2, 6), np.int32)
    mask[1, :2] = 0
    kw = dict(steps=8, gen_length=16, block_length=8, threshold=threshold, cfg_scale=cfg)
    want, want_calls = _plain_cached_generate(model, params, prompt, mask, cache=cache, **kw)
    got, stats = generate(model, params, prompt, attention_mask=mask, mask_id=255, cache=cache,
                          return_stats=True, **kw)
    np.testing.assert_array_equal(np.asarray(got), want)
    assert stats["model_calls"] == want_calls
    if threshold is None:
        assert want_calls == 8
    exact = np.asarray(generate(model, params, prompt, attention_mask=mask, mask_id=255, **kw))
    assert (exact[:, 6:] != 255).all() and (np.asarray(got)[:, 6:] != 255).all()


@pytest.mark.parametrize("cache", ["prefix", "dual"])
def test_cached_batch_gives_each_row_its_own_tokens(golden_model, cache):
    # (the first row alone has the batch's shape, so only the second compiles anew)
    _check_rows_alone(*golden_model, (6, 3), steps=8, gen_length=16, block_length=8, mask_id=255, cache=cache)


def test_cache_rejects_infilling_and_unknown_kinds(golden_model):
    model, params = golden_model
    holes = np.array([[1, 255, 3, 4]])
    with pytest.raises(ValueError, match="cache='dual'"):
        generate(model, params, holes, steps=4, gen_length=4, block_length=4, mask_id=255, cache="dual")
    with pytest.raises(ValueError, match="cache='suffix'"):
        generate(model, params, np.ones((1, 4), np.int32), steps=4, gen_length=4, block_length=4, mask_id=255, cache="suffix")
