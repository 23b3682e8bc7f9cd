"""Shifted logit alignment (Dream, AR checkpoints): every reader of logits (the training loss,
the Monte Carlo likelihood, the LLaDA sampler with guidance, GRPO's log-probabilities, the
lm-eval adapter, Dream's sampler) gives the numbers of the same computation on logits shifted
by hand: a model whose output at i is the unshifted model's output at i - 1."""

import dataclasses

import numpy as np
import pytest

import jax
import jax.numpy as jnp

from llada_jax import objectives
from llada_jax.evaluation.harness import LLaDAEvalHarness
from llada_jax.model import LLaDA, LLaDAConfig, init_params, lm_head
from llada_jax.objectives import diffusion, grpo, likelihood
from llada_jax.sampling import dream, sampler

CONFIG = LLaDAConfig.tiny(d_model=32, n_heads=2, n_kv_heads=1, n_layers=1, mlp_hidden_size=32, vocab_size=64,
                          embedding_size=64, mask_token_id=63, eos_token_id=62, pad_token_id=62,
                          logit_alignment="shifted")


@dataclasses.dataclass(frozen=True)
class HandShifted:
    """The shifted model by hand: the "same" model's final hidden states moved one position
    right (position 0 keeps its own), then the requested positions and the head."""

    config: LLaDAConfig

    def apply(self, variables, ids, attention_mask=None, *, output_positions=None, return_hidden=False,
              kv_cache=None, return_kv=False, **kw):
        assert kv_cache is None and not return_kv
        same = LLaDA(self.config.replace(logit_alignment="same"))
        x, head = same.apply(variables, ids, attention_mask, return_hidden=True, **kw)
        x = jnp.concatenate([x[:, :1], x[:, :-1]], axis=1)
        if output_positions is not None:
            x = jnp.take_along_axis(x, output_positions[..., None], axis=1)
        return (x, head) if return_hidden else lm_head(x, head)


@pytest.fixture(scope="module")
def models():
    # Random numpy weights of the model's shapes (no init compile); std 0.12: peaked logits.
    rng = np.random.default_rng(0)
    shapes = jax.eval_shape(lambda: init_params(CONFIG, jax.random.key(0)))
    params = jax.tree_util.tree_map(lambda s: jnp.asarray(rng.normal(0, 0.12, s.shape), s.dtype), shapes)
    return LLaDA(CONFIG), HandShifted(CONFIG), params


IDS = np.array([[5, 9, 11, 2, 40, 33, 7, 8], [1, 2, 3, 4, 5, 6, 7, 8]], np.int32)


def test_logits_are_the_hand_shifted_ones(models):
    model, hand, params = models
    out = model.apply({"params": params}, IDS)
    np.testing.assert_array_equal(out[:, 2:], LLaDA(CONFIG.replace(logit_alignment="same")).apply(
        {"params": params}, IDS)[:, 1:-1])
    np.testing.assert_allclose(out, hand.apply({"params": params}, IDS), atol=1e-6)
    pos = jnp.array([[0, 3, 7], [1, 2, 6]])
    np.testing.assert_allclose(model.apply({"params": params}, IDS, output_positions=pos),
                               hand.apply({"params": params}, IDS, output_positions=pos), atol=1e-6)


def test_training_loss(models):
    model, hand, params = models
    noise = objectives.get("pretrain").noise({"input_ids": IDS}, jax.random.key(1), None, mask_id=63, eps=1e-3)

    def loss(m):
        def forward(ids, valid=None):
            return diffusion.ChunkedLogits(*m.apply({"params": params}, ids, return_hidden=True), chunk=4)
        return objectives.get("pretrain").loss(forward, {"input_ids": IDS}, noise, None)[0]

    np.testing.assert_allclose(loss(model), loss(hand), rtol=1e-6)


def test_likelihood_and_the_lm_eval_adapter(models):
    model, hand, params = models
    kw = dict(rng=jax.random.key(2), mc_num=4, batch_size=4)
    ll = likelihood.log_likelihood(model, params, [5, 9, 11], [2, 40, 33], **kw)
    assert ll == pytest.approx(likelihood.log_likelihood(hand, params, [5, 9, 11], [2, 40, 33], **kw), rel=1e-6)
    pairs, keys = [([5, 9, 11], [2, 40, 33])], [jax.random.key(3)]
    got = [LLaDAEvalHarness(model=m, params=params, tokenizer=object(), mc_num=4, batch_size=4)
           .loglikelihoods(pairs, keys)[0] for m in (model, hand)]
    assert got[0] == pytest.approx(got[1], rel=1e-6)


def test_samplers_and_guidance(models):
    model, hand, params = models
    prompt = IDS[:, :4]
    kw = dict(steps=4, gen_length=4, block_length=2, cfg_scale=0.5)
    out = np.asarray(sampler.generate(model, params, prompt, **kw))
    np.testing.assert_array_equal(out, sampler.generate(hand, params, prompt, **kw))
    kw = dict(steps=4, gen_length=4, alg="entropy", attention_mask=np.array([[0, 1, 1, 1], [1, 1, 1, 1]]))
    np.testing.assert_array_equal(dream.generate(model, params, prompt, **kw), dream.generate(hand, params, prompt, **kw))


def test_rl_log_probabilities(models):
    model, hand, params = models
    got = [grpo.completion_logps(lambda p, x, m=m: m.apply({"params": p}, x), params, jnp.asarray(IDS),
                                 jax.random.key(4), prompt_len=3, p_mask_prompt=0.15, mask_id=63)
           for m in (model, hand)]
    np.testing.assert_allclose(got[0], got[1], atol=1e-6)


@pytest.mark.parametrize("logit_alignment", ["same", "shifted"])
def test_autoregressive_loss_scores_each_token_from_the_outputs_before_it(models, logit_alignment):
    """The train step's AR loss of a causal model: the output that saw tokens <= i scores
    token i + 1, under either alignment (a shifted AR checkpoint, LLaDA's AR baseline)."""
    from llada_jax.training import step

    _, _, params = models
    model = LLaDA(CONFIG.replace(causal=True, logit_alignment=logit_alignment))
    st = step.Static(model, None, "autoregressive", 63, 1e-3, 0.0, 1)
    loss, m = step.loss_fn(params, {"input_ids": IDS}, None, None, st)
    raw = LLaDA(CONFIG.replace(causal=True, logit_alignment="same")).apply({"params": params}, IDS)
    ce = -jnp.take_along_axis(jax.nn.log_softmax(raw[:, :-1]), IDS[:, 1:, None], -1)
    np.testing.assert_allclose(loss, ce.mean(), rtol=1e-6)
    assert int(m["num_masked"]) == IDS.shape[0] * (IDS.shape[1] - 1)
