"""Forward process, losses and the likelihood estimate against hand computations."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from llada_jax.objectives import diffusion, likelihood
from llada_jax.model import LLaDA, LLaDAConfig, init_params


def _np_ce(logits, targets):
    logits = logits.astype(np.float64)
    logz = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
    return logz - np.take_along_axis(logits, targets[..., None], -1)[..., 0]


def test_forward_process_masks_with_rate_p_and_never_the_prompt():
    rng = jax.random.key(0)
    ids = jnp.arange(4 * 2000).reshape(4, 2000) % 50
    prompt = jnp.zeros_like(ids, bool).at[:, :500].set(True)
    noisy, masked, p = diffusion.forward_process(rng, ids, 99, eps=1e-3, prompt_mask=prompt)
    assert p.shape == ids.shape and bool(jnp.all(p == p[:, :1]))
    assert bool(jnp.all((p >= 1e-3) & (p <= 1.0)))
    assert not bool(jnp.any(masked[:, :500]))
    assert bool(jnp.all(jnp.where(masked, noisy == 99, noisy == ids)))
    # 1500 Bernoulli(p) draws per row: the rate is p within 5 standard deviations.
    rate = jnp.mean(masked[:, 500:], axis=1)
    sd = jnp.sqrt(p[:, 0] * (1 - p[:, 0]) / 1500)
    assert bool(jnp.all(jnp.abs(rate - p[:, 0]) <= 5 * sd + 1e-3))


def test_forward_process_t_is_uniform_across_rows():
    _, _, p = diffusion.forward_process(jax.random.key(1), jnp.zeros((4000, 2), jnp.int32), 9)
    t = (np.asarray(p[:, 0]) - 1e-3) / (1 - 1e-3)
    hist, _ = np.histogram(t, bins=4, range=(0, 1))
    assert np.all(np.abs(hist - 1000) < 5 * math.sqrt(1000 * 0.75))


@pytest.fixture
def hand_batch():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 5, 7)).astype(np.float32) * 3
    ids = rng.integers(0, 7, size=(2, 5)).astype(np.int32)
    masked = np.array([[1, 0, 1, 1, 0], [0, 0, 0, 1, 1]], bool)
    p = np.array([[0.6] * 5, [0.25] * 5], np.float32)
    prompt = np.array([[0, 0, 0, 0, 0], [1, 1, 1, 0, 0]], bool)
    return logits, ids, masked, p, prompt


def test_pretrain_loss_matches_numpy(hand_batch):
    logits, ids, masked, p, _ = hand_batch
    loss, metrics = diffusion.pretrain_loss(logits, ids, masked, p)
    ce = _np_ce(logits, ids)
    np.testing.assert_allclose(float(loss), (ce * masked / p).sum() / 10, rtol=1e-5)
    assert int(metrics["num_masked"]) == 5
    want_acc = ((logits.argmax(-1) == ids) & masked).sum() / 5
    np.testing.assert_allclose(float(metrics["masked_accuracy"]), want_acc)
    valid = np.array([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], bool)
    loss_v, _ = diffusion.pretrain_loss(logits, ids, masked & valid, p, valid_mask=valid)
    np.testing.assert_allclose(float(loss_v), (ce * (masked & valid) / p).sum() / 9, rtol=1e-5)


def test_sft_loss_matches_numpy(hand_batch):
    logits, ids, masked, p, prompt = hand_batch
    masked = masked & ~prompt
    loss, _ = diffusion.sft_loss(logits, ids, masked, p, prompt)
    ce = _np_ce(logits, ids)
    answer_len = np.array([[5], [2]])
    np.testing.assert_allclose(float(loss), (ce * masked / p / answer_len).sum() / 2, rtol=1e-5)


def test_stratified_mask_counts_are_a_permutation_when_batch_equals_length():
    is_mask, num = likelihood.stratified_mask(jax.random.key(3), 6, 2, 6)
    assert sorted(np.asarray(num).tolist()) == [1, 2, 3, 4, 5, 6]
    assert not bool(jnp.any(is_mask[:, :2]))
    np.testing.assert_array_equal(np.asarray(is_mask.sum(1)), np.asarray(num))


def test_stratified_mask_spacing_matches_reference_formula():
    # batch 4 over L = 10: l_i = ((round(k + 2.5 i) - 1) mod 10) + 1, round half to even.
    _, num = likelihood.stratified_mask(jax.random.key(7), 4, 0, 10)
    num = np.asarray(num)
    k = num[0]
    want = [((int(np.round(k + 2.5 * i)) - 1) % 10) + 1 for i in range(4)]
    assert num.tolist() == want


def test_log_likelihood_is_unbiased_for_the_enumerated_elbo():
    config = LLaDAConfig.tiny(vocab_size=8, embedding_size=8, mask_token_id=7, eos_token_id=6,
                              pad_token_id=6, d_model=32, n_heads=2, n_kv_heads=1, mlp_hidden_size=64)
    params = jax.tree_util.tree_map(lambda w: w * 4, init_params(config, jax.random.key(0)))
    model = LLaDA(config)
    prompt, answer = np.array([1, 2]), np.array([3, 0, 2])
    seq = np.concatenate([prompt, answer])
    big_l = len(answer)
    exact = 0.0
    for l in range(1, big_l + 1):
        subsets = list(itertools.combinations(range(big_l), l))
        for subset in subsets:
            x = seq.copy()
            x[[2 + i for i in subset]] = 7
            logits = np.asarray(model.apply({"params": params}, jnp.asarray(x[None])))[0]
            ce = _np_ce(logits, seq)
            score = sum(ce[2 + i] for i in subset) * big_l / l
            exact += score / big_l / len(subsets)
    # batch_size = L: the reference's stratified draws of l are then exactly uniform on 1..L
    # (with other batch sizes its rounding favours small l, as the reference does).
    estimates = [likelihood.log_likelihood(model, params, prompt, answer, rng=jax.random.key(s),
                                          mc_num=9, batch_size=3, mask_id=7) for s in range(40)]
    mean, se = np.mean(estimates), np.std(estimates, ddof=1) / math.sqrt(len(estimates))
    assert se > 0 and abs(mean - (-exact)) < 3 * se, (mean, -exact, se)


def test_log_likelihood_rejects_bad_arguments():
    config = LLaDAConfig.tiny()
    model, params = LLaDA(config), init_params(config, jax.random.key(0))
    with pytest.raises(ValueError, match="mc_num=10"):
        likelihood.log_likelihood(model, params, [1], [2], rng=jax.random.key(0), mc_num=10, batch_size=4)
    with pytest.raises(ValueError, match="answer is empty"):
        likelihood.log_likelihood(model, params, [1], [], rng=jax.random.key(0))
