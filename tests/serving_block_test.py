"""The serving engine on a block-causal model (block diffusion): each slot denoised block by
block against its own exact KV cache. At temperature 0 its tokens equal
`block_cache.generate`'s for the request alone; alone or among others (greedy, threshold,
seeded sampling with top-k/p, random remasking) they are the same; nothing compiles after
warm-up."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import llada_jax
from llada_jax.model import LLaDAConfig, init_params
from llada_jax.sampling import block_cache
from llada_jax.sampling.params import SamplingParams
from llada_jax.serving.engine import Engine

B = 4  # the model's block size
CONFIG = LLaDAConfig.tiny(block_size=B, d_model=32, n_heads=2, n_kv_heads=1, n_layers=2, mlp_hidden_size=32,
                          max_sequence_length=64, eos_token_id=76, pad_token_id=76)  # 76: often predicted
SP = SamplingParams(gen_length=8, block_length=B, steps=8)
# prompt lengths 5 (one prefilled block, its tail in the first denoised block) and 8 (two whole blocks)
PROMPTS = [[5, 9, 11, 40, 33], [7, 8, 1, 3, 4, 6, 2, 9], [20, 21, 22, 23, 24], [60, 61, 62, 63, 64, 65, 66, 67]]


@pytest.fixture(scope="module")
def engine():
    # Random numpy weights of the model's shapes (no init compile); std 0.3: peaked logits,
    # so the threshold and EOS both trigger.
    rng = np.random.default_rng(0)
    shapes = jax.eval_shape(lambda: init_params(CONFIG, jax.random.key(0)))
    params = jax.tree_util.tree_map(lambda s: jnp.asarray(rng.normal(0, 0.3, s.shape), s.dtype), shapes)
    eng = Engine(llada_jax.build(CONFIG), params, slots=3, buckets=(16,))
    eng.warm_up()
    return eng


def _answer(row, eos):
    stop = next((j for j, t in enumerate(row) if t == eos), len(row))
    return row[:stop]


@pytest.mark.parametrize("sp", [SP, SP.replace(threshold=0.3, steps=4)], ids=["schedule", "threshold"])
def test_greedy_tokens_equal_block_cache_generate_alone(engine, sp):
    by_length = {}
    for p in PROMPTS:
        by_length.setdefault(len(p), []).append(p)
    for length, prompts in sorted(by_length.items()):
        want = np.asarray(block_cache.generate(engine.model, engine.params, np.array(prompts), steps=sp.steps,
                                               gen_length=sp.gen_length, block_length=B, threshold=sp.threshold))
        got = [r.tokens for r in engine.generate(prompts, sp)]
        assert got == [_answer(row, CONFIG.eos_token_id) for row in want[:, length:].tolist()], length


def test_a_request_gets_the_same_tokens_alone_or_among_others_and_nothing_compiles(engine):
    hot = SP.replace(temperature=0.9, top_k=20, top_p=0.9, seed=7)
    thr = SP.replace(threshold=0.3, steps=4, remasking="random", seed=3)
    mixed = [[SP, hot, thr][i % 3] for i in range(len(PROMPTS))]
    before = engine.compilations()
    alone = [engine.generate([p], q)[0].tokens for p, q in zip(PROMPTS, mixed)]
    together = [r.tokens for r in engine.generate(PROMPTS, mixed)]  # 4 requests, 3 slots: one waits
    reversed_ = [r.tokens for r in engine.generate(PROMPTS[::-1], mixed[::-1])][::-1]
    assert together == alone and reversed_ == alone
    assert engine.compilations() == before
    assert engine.generate([PROMPTS[1]], hot.replace(seed=8))[0].tokens != alone[1]
    with pytest.raises(ValueError, match="block_length=2: expected the model's block size 4"):
        engine.submit(PROMPTS[0], SamplingParams(gen_length=8, block_length=2))


def test_the_server_answers_with_the_engine_tokens(engine):
    from fastapi.testclient import TestClient

    from llada_jax.serving.server import create_app

    # max_tokens 3 < the block size: the request still takes the model's block (gen_length 4)
    want = engine.generate([PROMPTS[1]], SamplingParams(gen_length=4, block_length=B, steps=4), max_tokens=3)[0].tokens
    with TestClient(create_app(engine, None, max_tokens=16)) as http:  # starts and stops the engine's thread
        r = http.post("/v1/completions", json={"model": "m", "prompt": PROMPTS[1], "max_tokens": 3})
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["text"] == " ".join(map(str, want)) and len(want) == 3
