"""SamplingParams, the sampler's traced option values, and the continuous-batching engine:
batch invariance (alone vs among others, greedy and seeded, with and without the dual
cache), slots refilled from the queue, and no compile after warm-up."""

import json

import jax
import numpy as np
import pytest

from llada_jax.sampling import sampler
from llada_jax.sampling.params import SamplingParams
from llada_jax.serving import engine as engine_lib
from llada_jax.serving.block import run_block

SP = SamplingParams(gen_length=16, block_length=8, steps=8)
PROMPTS = [list(np.random.default_rng(0).integers(0, 250, n)) for n in (5, 9, 3, 7, 6, 4)]


@pytest.mark.parametrize("kw,match", [
    (dict(gen_length=10, block_length=4), "block_length=4"),
    (dict(gen_length=8, block_length=4, steps=3), "steps=3"),
    (dict(threshold=0.0), "threshold=0.0"),
    (dict(temperature=-1.0), "temperature=-1.0"),
    (dict(top_p=0.0), "top_p=0.0"),
    (dict(top_k=-1), "top_k=-1"),
    (dict(remasking="top_p"), "remasking='top_p'"),
    (dict(cache="suffix"), "cache='suffix'"),
    (dict(seed=-1), "seed=-1"),
])
def test_sampling_params_name_the_bad_field(kw, match):
    with pytest.raises(ValueError, match=f"SamplingParams: {match}"):
        SamplingParams(**kw)


def test_sampling_params_are_frozen_and_round_trip_through_json():
    p = SamplingParams(gen_length=32, block_length=8, steps=16, temperature=0.7, threshold=0.9, top_k=5, seed=3)
    assert SamplingParams.from_json(json.dumps(p.to_dict())) == p
    assert (p.num_blocks, p.steps_per_block, SamplingParams(gen_length=8).steps) == (4, 4, 8)
    with pytest.raises(AttributeError):
        p.temperature = 1.0
    with pytest.raises(ValueError, match="SamplingParams: temprature"):
        SamplingParams.from_dict({"temprature": 1.0})


def test_generate_reads_sampling_params_and_compiles_once_for_any_values(golden_model):
    model, params = golden_model
    prompt = np.array([PROMPTS[0]])
    kw = dict(steps=8, gen_length=16, block_length=8, mask_id=255)
    want = np.asarray(sampler.generate(model, params, prompt, **kw))
    got = np.asarray(sampler.generate(model, params, prompt, mask_id=255, sampling=SP))
    np.testing.assert_array_equal(got, want)
    before = sampler._reverse_process._cache_size()
    for thr in (0.3, 0.7):  # the threshold is a traced value
        sampler.generate(model, params, prompt, threshold=thr, **kw)
    assert sampler._reverse_process._cache_size() == before
    with pytest.raises(ValueError, match="not both"):
        sampler.generate(model, params, prompt, sampling=SP, temperature=1.0)

    def hot(seed, **extra):  # noise and top-k/p on: one program for every value
        return np.asarray(sampler.generate(model, params, prompt, rng=jax.random.key(seed), **kw, **extra))

    top1 = hot(1, temperature=5.0, top_k=1)
    with_noise = sampler._reverse_process._cache_size()
    np.testing.assert_array_equal(hot(2, temperature=0.5, top_k=1), top1)  # top-1 leaves no room for noise
    np.testing.assert_array_equal(hot(1, temperature=5.0, top_p=1e-6), top1)  # nor does a tiny top-p
    assert (hot(1, temperature=5.0, top_k=50) != hot(2, temperature=5.0, top_k=50)).any()
    hot(3, temperature=1.3, top_k=7, top_p=0.8, threshold=0.9)
    assert sampler._reverse_process._cache_size() == with_noise


@pytest.fixture(scope="module")
def engines(golden_model):
    model, params = golden_model
    plain = engine_lib.Engine(model, params, slots=4, buckets=(48,), block_width=8)
    dual = engine_lib.Engine(model, params, slots=4, buckets=(48,), block_width=8, cache="dual")
    plain.warm_up()
    dual.warm_up()
    return plain, dual



@pytest.mark.parametrize("cache", [None, "dual"])
def test_a_request_gets_the_same_tokens_alone_or_among_others(engines, golden_model, cache):
    eng = engines[cache == "dual"]
    sp = SP.replace(cache=cache)
    hot = sp.replace(temperature=1.0, top_p=0.9, seed=7)
    thr = sp.replace(threshold=0.3, steps=4, remasking="random", seed=2)
    mixed = [[sp, hot, thr][i % 3] for i in range(len(PROMPTS))]
    alone = [eng.generate([p], q)[0].tokens for p, q in zip(PROMPTS, mixed)]
    before = eng.compilations()
    together = [r.tokens for r in eng.generate(PROMPTS, mixed)]  # 6 requests, 4 slots: two wait
    reversed_ = [r.tokens for r in eng.generate(PROMPTS[::-1], mixed[::-1])][::-1]
    assert together == alone and reversed_ == alone
    assert eng.compilations() == before
    assert all(len(t) == 16 for t in alone)
    if cache is None:  # greedy rows equal the plain sampler's
        model, params = golden_model
        for p, t in [(PROMPTS[0], alone[0])]:  # the shape the generate tests above compiled
            out = np.asarray(sampler.generate(model, params, np.array([p]), steps=8, gen_length=16, block_length=8))
            assert out[0, len(p):].tolist() == t
    other_seed = eng.generate([PROMPTS[1]], hot.replace(seed=8))[0].tokens
    assert other_seed != alone[1]


def test_slots_split_over_a_mesh_give_each_request_its_one_device_tokens(engines, golden_model):
    """Data parallel: 8 slots over the suite's 8 CPU devices (1 row each), the params replicated."""
    from jax.sharding import Mesh

    model, params = golden_model
    mesh = Mesh(np.asarray(jax.devices()[:8]), ("data",))
    split = engine_lib.Engine(model, params, slots=8, buckets=(48,), block_width=8, mesh=mesh)
    hot = SP.replace(temperature=1.0, top_p=0.9, seed=7)
    mixed = [[SP, hot][i % 2] for i in range(len(PROMPTS))]
    got = split.generate(PROMPTS, mixed)
    assert [r.tokens for r in got] == [r.tokens for r in engines[0].generate(PROMPTS, mixed)]
    assert {d for leaf in jax.tree_util.tree_leaves(split.params) for d in leaf.devices()} == set(mesh.devices.flat)
    with pytest.raises(ValueError, match="slots=6: expected a 1-D mesh whose size divides the slots"):
        engine_lib.Engine(model, params, slots=6, buckets=(48,), block_width=8, mesh=mesh)


def test_slots_are_refilled_and_max_tokens_ends_a_request_early(engines):
    eng = engines[0]
    short = eng.submit(PROMPTS[0], SP, max_tokens=3)  # leaves after its first block
    longs = [eng.submit(p, SamplingParams(gen_length=32, block_length=8, steps=16)) for p in PROMPTS[1:5]]
    steps = 0
    while not short.done.is_set():
        eng.step()
        steps += 1
    assert steps == 1 and short.finish_reason == "length" and len(short.tokens) == 3
    assert eng.queue_depth() == 0 and eng.occupied() == 4  # the 5th request took the freed slot
    while not all(r.done.is_set() for r in longs):
        eng.step()
    assert [len(r.tokens) for r in longs] == [32] * 4 and eng.idle()


def test_engine_rejects_what_it_cannot_run_before_queueing(engines):
    eng = engines[0]
    for prompt, params, match in [([1] * 40, SP, "prompt: 40 tokens"),
                                  ([1, 255], SP, "mask_id=255"),
                                  ([1], SamplingParams(gen_length=16, block_length=16), "block_length=16"),
                                  ([1], SP.replace(cfg_scale=1.0), "cfg_scale=1.0"),
                                  ([1], SP.replace(steps=32, block_length=8, gen_length=16), "steps=32")]:
        with pytest.raises(ValueError, match=match):
            eng.submit(prompt, params)
    assert eng.queue_depth() == 0
    assert run_block._cache_size() >= 1
