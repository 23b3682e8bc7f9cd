"""The learning-rate schedules against their closed forms, and the optimizer's weight-decay mask."""

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from llada_jax.training import optimizer


def _optim(schedule, **kw):
    fields = dict(lr=4e-4, warmup_steps=10, decay_steps=20, final_lr_ratio=0.025, drop_step=-1, drop_ratio=0.25,
                  schedule=schedule)
    return ml_collections.ConfigDict({**fields, **kw})


def _closed_form(o, total, step):
    """The schedules written out in float64, independently of the optax pieces."""
    lr, warm, final = o.lr, o.warmup_steps, o.lr * o.final_lr_ratio
    if o.schedule == "constant":
        return lr * min(1.0, (step + 1) / warm) if warm else lr
    if step < warm:
        return lr * step / warm
    if o.schedule == "cosine":
        frac = min(1.0, (step - warm) / (total - warm))
        return final + (lr - final) * 0.5 * (1 + math.cos(math.pi * frac))
    decay_start = total - o.decay_steps
    dropped = lr * o.drop_ratio if o.drop_step >= 0 else lr
    if step >= decay_start:
        at_decay = dropped if 0 <= o.drop_step <= decay_start else lr
        return at_decay + (final - at_decay) * min(1.0, (step - decay_start) / max(o.decay_steps, 1))
    return dropped if 0 <= o.drop_step <= step else lr


CASES = [
    ("wsd", {}, 100),
    ("wsd", {"drop_step": 50}, 100),
    ("wsd", {"drop_step": 5}, 100),  # a drop inside the warmup: warmup first, then the dropped level
    ("wsd", {"drop_step": 90}, 100),  # a drop after the decay began: the decay starts from lr
    ("wsd", {"warmup_steps": 0, "decay_steps": 0}, 30),
    ("wsd", {"warmup_steps": 8, "decay_steps": 5}, 10),  # the warmup runs into the decay: the warmup wins
    ("cosine", {}, 100),
    ("constant", {}, 100),
    ("constant", {"warmup_steps": 0}, 100),
]


@pytest.mark.parametrize("schedule, fields, total", CASES)
def test_schedule_equals_its_closed_form(schedule, fields, total):
    o = _optim(schedule, **fields)
    f = optimizer.make_schedule(o, total)
    steps = sorted({0, 1, 4, 5, 9, 10, 11, 49, 50, 51, 79, 80, 81, 89, 90, 99, total - 1, total, total + 3})
    want = [_closed_form(o, total, s) for s in steps]
    got_eager = [float(f(s)) for s in steps]
    got_jit = np.asarray(jax.jit(jax.vmap(f))(jnp.asarray(steps, jnp.int32)))  # as in the train step: int32
    np.testing.assert_allclose(got_eager, want, rtol=2e-6, atol=1e-12)
    np.testing.assert_allclose(got_jit, want, rtol=2e-6, atol=1e-12)
    assert got_jit.dtype == np.float32


def test_wsd_and_cosine_schedules():
    o = ml_collections.ConfigDict(dict(lr=4e-4, warmup_steps=10, decay_steps=20, final_lr_ratio=0.025,
                                       drop_step=50, drop_ratio=0.25, schedule="wsd"))
    f = optimizer.make_schedule(o, 100)
    got = [float(f(s)) for s in (0, 5, 10, 49, 50, 79, 80, 90, 100)]
    want = [0, 2e-4, 4e-4, 4e-4, 1e-4, 1e-4, 1e-4, 1e-4 + (1e-5 - 1e-4) * 0.5, 1e-5]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-12)
    o.update(schedule="cosine", drop_step=-1)
    f = optimizer.make_schedule(o, 100)
    np.testing.assert_allclose([float(f(s)) for s in (0, 10, 100)], [0, 4e-4, 1e-5], rtol=1e-5, atol=1e-12)


def test_weight_decay_skips_norms_and_expert_bias():
    params = {"blocks": {"q_proj": jnp.ones((2, 2)), "attn_norm": jnp.ones(2), "expert_bias": jnp.ones(2)},
              "ln_f": jnp.ones(2), "embed": jnp.ones((3, 2))}
    mask = optimizer._decay_mask(params)
    assert mask == {"blocks": {"q_proj": True, "attn_norm": False, "expert_bias": False}, "ln_f": False,
                    "embed": True}
