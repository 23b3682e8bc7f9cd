"""The serving engine on every kind of family the registry holds: a shifted-alignment model
(Dream and the AR checkpoints: the output at i predicts token i + 1) and a sparse MoE
model. At temperature 0 the engine's tokens equal `generate`'s, alone or among others."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import llada_jax
from llada_jax.model import LLaDAConfig, init_params
from llada_jax.model.moe import MoEConfig
from llada_jax.sampling import sampler
from llada_jax.sampling.params import SamplingParams
from llada_jax.serving.engine import Engine

BASE = dict(d_model=32, n_heads=2, n_kv_heads=1, n_layers=1, mlp_hidden_size=32, vocab_size=64, embedding_size=64,
            mask_token_id=63, eos_token_id=62, pad_token_id=62, max_sequence_length=64)
FAMILIES = {
    "shifted": LLaDAConfig.tiny(logit_alignment="shifted", **BASE),
    "moe": LLaDAConfig.tiny(moe=MoEConfig(num_experts=4, num_experts_per_tok=2, expert_hidden_size=16), **BASE),
}
SP = SamplingParams(gen_length=8, block_length=4, steps=8)
PROMPTS = [[5, 9, 11, 40, 33], [7, 8, 1, 3, 4], [20, 21, 22, 23, 24]]  # one length: one generate program


def _model(config):
    # Random numpy weights of the model's shapes (no init compile); std 0.12: peaked logits.
    rng = np.random.default_rng(0)
    shapes = jax.eval_shape(lambda: init_params(config, jax.random.key(0)))
    params = jax.tree_util.tree_map(lambda s: jnp.asarray(rng.normal(0, 0.12, s.shape), s.dtype), shapes)
    return llada_jax.build(config), params


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_engine_tokens_at_temperature_0_equal_generate(family):
    config = FAMILIES[family]
    model, params = _model(config)
    eng = Engine(model, params, slots=2, buckets=(24,), block_width=4)
    together = [r.tokens for r in eng.generate(PROMPTS, SP)]  # 3 requests, 2 slots
    alone = [eng.generate([p], SP)[0].tokens for p in PROMPTS]
    assert together == alone
    out = np.asarray(sampler.generate(model, params, np.array(PROMPTS), sampling=SP))[:, 5:]
    for got, row in zip(alone, out.tolist()):
        stop = next((j for j, t in enumerate(row) if t == config.eos_token_id), len(row))
        assert got == row[:stop], family
