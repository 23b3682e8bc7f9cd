"""The block-cache sampler of block-causal models: exact (its tokens equal a recompute of
the whole prefix at every step, for every option, batched with left padding), LLaDA 2.x's
rules (a line-by-line port of the published loop as the reference), bad input. One
compiled sampler per option set, shared by the tests (module fixture)."""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from llada_jax.model import LLaDAConfig, build, init_params
from llada_jax.sampling import block_cache, generate

B = 4  # the model's block size


@pytest.fixture(scope="module")
def block_model():
    cfg = LLaDAConfig.tiny(block_size=B)
    model = build(cfg)
    params = init_params(cfg, jax.random.key(0))
    # a peaked head: confident predictions, so thresholds and EOS both trigger
    params["ff_out"] = params["ff_out"] * 40.0
    return model, params


PROMPTS = np.array([[250, 250, 250, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6, 7]], np.int32)
PADDING = np.array([[0, 0, 0, 1, 1, 1, 1], [1] * 7])

OPTIONS = {  # every rule: threshold, eos_early_stop, minimal_topk; sampling with top-k / top-p; random order
    "greedy_threshold_eos": dict(threshold=0.5, eos_early_stop=True, minimal_topk=2, steps=3, eos_id=157),
    "temperature_topk_topp_random": dict(temperature=0.8, top_k=20, top_p=0.9, remasking="random", steps=4),
}
EOS = 157  # a token the peaked model predicts often


@pytest.fixture(scope="module")
def samples(block_model):
    """{option: (cached tokens, stats, reference)}: the greedy reference is the published
    loop below on each row (a recompute of the prefix), the sampled one `recompute=True`."""
    model, params = block_model
    out = {}
    for name, options in OPTIONS.items():
        kw = dict(attention_mask=PADDING, gen_length=13, block_length=B, rng=jax.random.key(5), **options)
        got, stats = generate(model, params, PROMPTS, return_stats=True, **kw)
        if name.startswith("greedy"):
            want = [_published_generate(model, params, PROMPTS[i:i + 1], PADDING[i:i + 1], gen_length=13,
                                        block_length=B, mask_id=255, **{k: options[k] for k in PUBLISHED})
                    for i in range(len(PROMPTS))]
        else:
            want = block_cache.generate(model, params, PROMPTS, recompute=True, **kw)
        out[name] = np.asarray(got), stats, want
    return out


PUBLISHED = ("steps", "threshold", "minimal_topk", "eos_id", "eos_early_stop")


@functools.lru_cache(maxsize=None)
def _full_forward(model):
    return jax.jit(lambda p, x, valid: model.apply({"params": p}, x, valid))


def _published_generate(model, params, prompt, padding, *, gen_length, block_length, steps, threshold, minimal_topk,
                        eos_id, mask_id, eos_early_stop):
    """LLaDA 2.x's generate (dllm `modeling_llada2_moe.py`, greedy), line by line in numpy,
    on a recompute of the whole prefix (left padding as invalid keys); batch 1, returns the
    answer up to its first EOS."""
    steps = min(steps, gen_length // minimal_topk)
    p = prompt.shape[1]
    num_blocks = (p + gen_length + block_length - 1) // block_length
    x = np.full((1, num_blocks * block_length), mask_id, np.int64)
    x[:, :p] = prompt
    valid = np.ones(x.shape, bool)
    valid[:, :p] = padding
    schedule = np.full(steps, block_length // steps)
    schedule[:block_length % steps] += 1
    for num_block in range(p // block_length, num_blocks):
        end = (num_block + 1) * block_length
        for step in range(steps):
            active = x[0, end - block_length:end] == mask_id
            if active.sum() == 0:
                break
            logits = np.asarray(_full_forward(model)(params, jnp.asarray(x, jnp.int32), valid),
                                np.float64)[0, end - block_length:end]
            probs = np.exp(logits - logits.max(-1, keepdims=True))
            probs /= probs.sum(-1, keepdims=True)
            x0, x0_p = probs.argmax(-1), probs.max(-1)
            confidence = np.where(active, x0_p, -np.inf)
            high = confidence > threshold
            k = schedule[step]
            transfer = np.zeros(block_length, bool)
            if high.sum() >= k:
                transfer = high
            else:
                transfer[np.argsort(-confidence, kind="stable")[:min(k, active.sum())]] = True
            x[0, end - block_length:end][transfer] = x0[transfer]
            if eos_early_stop and (x0[transfer] == eos_id).any():
                eos_pos = np.flatnonzero(x[0] == eos_id)
                if len(eos_pos) and (x[0, p:eos_pos[0]] != mask_id).all():
                    return x[0, p:eos_pos[0] + 1]
        if (x[0, p:end] == eos_id).any():
            break
    answer = x[0, p:p + gen_length]
    eos = np.flatnonzero(answer == eos_id)
    return answer[:eos[0] + 1] if len(eos) else answer


def test_block_cache_equals_recompute_of_the_prefix(samples):
    got, stats, want = samples["temperature_topk_topp_random"]
    np.testing.assert_array_equal(got, np.asarray(want))
    for got, stats, _ in samples.values():
        assert got.shape == (2, 7 + 13)
        np.testing.assert_array_equal(got[:, :7], PROMPTS)
        # the grid is aligned to position 0: block 1 (positions 4-7) is the first denoised one
        assert stats["calls_per_block"][0] == 0 and stats["calls_per_block"][1] > 0


def test_llada2_rules_token_for_token_with_left_padding(samples):
    got, _, want = samples["greedy_threshold_eos"]
    for row, ref in zip(got[:, 7:], want):  # everything after a row's first answer EOS is EOS
        np.testing.assert_array_equal(row[:len(ref)], ref)
        assert ref[-1] == EOS and (row[len(ref):] == EOS).all()
    assert min(len(ref) for ref in want) < 13 - B  # a row stops early, before its last block


def test_bad_input_fails_before_compiling(block_model, tmp_path):
    model, params = block_model
    from llada_jax import generate as generate_cli

    (tmp_path / "run.json").write_text(json.dumps({"model": {"block_size": 0}}))  # a full-diffusion run
    with pytest.raises(ValueError, match="--block_size=4: .* was trained with model.block_size=0, full diffusion "
                                         r"\(bidirectional\); convert it first"):
        generate_cli.load(str(tmp_path), block_size=4)
    with pytest.raises(ValueError, match="cache=.dual., expected None for a block-causal model"):
        generate(model, params, PROMPTS, gen_length=8, block_length=B, cache="dual")
    with pytest.raises(ValueError, match="block_length=8, expected the model.s block size 4"):
        generate(model, params, PROMPTS, gen_length=8, block_length=8)
    with pytest.raises(ValueError, match=r"minimal_topk=9, expected <= gen_length=8 \(steps are capped"):
        generate(model, params, PROMPTS, gen_length=8, block_length=B, minimal_topk=9)
    full = build(model.config.replace(block_size=0))
    with pytest.raises(ValueError, match="model.config.block_size=0, expected > 0: the block-cache sampler"):
        block_cache.generate(full, params, PROMPTS, gen_length=8, block_length=B)
    from llada_jax.serving.engine import Engine

    with pytest.raises(ValueError, match="engine: block_width=8: expected the model's block size 4"):
        Engine(model, params, block_width=8)
    with pytest.raises(ValueError, match="engine: guidance=False, cache='dual': expected False and None"):
        Engine(model, params, cache="dual")
    shifted = build(model.config.replace(logit_alignment="shifted"))
    with pytest.raises(ValueError, match="model.config.logit_alignment='shifted', expected 'same' for the block cache"):
        generate(shifted, params, PROMPTS, gen_length=8, block_length=B)
    with pytest.raises(ValueError, match=r"\[.minimal_topk.\] apply to block-causal models only"):
        generate(full, params, PROMPTS, gen_length=8, block_length=8, steps=8, minimal_topk=2)
