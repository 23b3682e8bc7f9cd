"""The end-of-answer rule (`generate(eos_early_stop=...)`, llada_jax.sampling.eos_stop)."""

import jax.numpy as jnp
import numpy as np
import pytest

from llada_jax.sampling import eos_stop, generate, sampler

MASK, EOS = 255, 7  # EOS: any token of the golden model's vocabulary will do


class EosFrom:
    """The golden model, except that from absolute position `start` on EOS wins by a
    wide margin: a model whose answer has ended there. Passes every cache argument on."""

    def __init__(self, model, start):
        self.model, self.start, self.config = model, start, model.config

    def __eq__(self, other):
        return isinstance(other, EosFrom) and (other.model, other.start) == (self.model, self.start)

    def __hash__(self):
        return hash((self.model, self.start))

    def apply(self, variables, x, attention_mask=None, *, positions=None, output_positions=None,
              return_kv=False, **kw):
        out = self.model.apply(variables, x, attention_mask, positions=positions,
                               output_positions=output_positions, return_kv=return_kv, **kw)
        logits, kv = out if return_kv else (out, None)
        pos = jnp.broadcast_to(jnp.arange(x.shape[1]), x.shape) if positions is None else positions
        if output_positions is not None:
            pos = jnp.take_along_axis(pos, output_positions, axis=1)
        logits = logits.at[..., EOS].add(jnp.where(pos >= self.start, 100.0, 0.0))
        return (logits, kv) if return_kv else logits


PROMPT = np.array([[3, 1, 4, 1, 5, 9], [2, 6, 5, 3, 5, 8]], np.int32)
KW = dict(steps=16, gen_length=16, block_length=4, mask_id=MASK, eos_id=EOS)


# The answer ends mid block 1 (position 6 + 2): "tail" stops after block 1, "block"
# after block 2 (the first one entirely EOS); the later blocks make no call.
@pytest.mark.parametrize("rule,calls,extra", [("tail", 4, {}), ("block", 8, {}),
                                               ("tail", 4, dict(threshold=0.9, cache="dual"))])
def test_equals_the_sampler_without_it_when_the_rest_is_eos(golden_model, rule, calls, extra):
    model, params = golden_model
    eos_model = EosFrom(model, PROMPT.shape[1] + 2)
    want, want_stats = generate(eos_model, params, PROMPT, return_stats=True, **KW, **extra)
    got, stats = generate(eos_model, params, PROMPT, return_stats=True, eos_early_stop=rule, **KW, **extra)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    assert (np.asarray(want)[:, 8:] == EOS).all() and (np.asarray(want)[:, 6:8] != EOS).any()
    if not extra:
        assert want_stats["model_calls"] == 16 and stats["model_calls"] == calls
    else:  # with the threshold rule the EOS blocks take one call each instead of four
        assert stats["model_calls"] < want_stats["model_calls"]
    # filled positions are credited to the call that finished their row
    assert (stats["reveal_step"][:, 6 + 4 * (calls // 4):] == stats["model_calls"] - 1).all()


def test_off_by_default(golden_model):
    model, params = golden_model
    eos_model = EosFrom(model, PROMPT.shape[1] + 2)
    plain, s_plain = generate(eos_model, params, PROMPT, return_stats=True, **KW)
    off, s_off = generate(eos_model, params, PROMPT, return_stats=True, eos_early_stop=None, **KW)
    np.testing.assert_array_equal(np.asarray(off), np.asarray(plain))
    assert s_plain["model_calls"] == s_off["model_calls"] == 16


def test_finished_rows_and_fill_after():
    block = jnp.array([[7, 7, 7], [1, 7, 7], [7, 1, 2]])
    assert eos_stop.finished_rows(block, 7, "block").tolist() == [True, False, False]
    assert eos_stop.finished_rows(block, 7, "tail").tolist() == [True, True, False]
    x = jnp.array([[1, 7, 9, 9], [1, 7, 9, 9]])
    when = jnp.array([[-1, 0, -1, -1], [-1, 0, -1, -1]])
    x2, when2 = eos_stop.fill_after(x, when, jnp.array([True, False]), 2, mask_id=9, eos_id=7, call=5)
    assert x2.tolist() == [[1, 7, 7, 7], [1, 7, 9, 9]]
    assert when2.tolist() == [[-1, 0, 5, 5], [-1, 0, -1, -1]]


@pytest.mark.parametrize("kw,match", [
    (dict(eos_early_stop="eos"), "eos_early_stop='eos'"),
    (dict(eos_early_stop=True), "eos_early_stop=True"),
])
def test_bad_values_raise_before_compiling(golden_model, kw, match):
    model, params = golden_model
    before = sampler._reverse_process._cache_size()
    with pytest.raises(ValueError, match=match):
        generate(model, params, PROMPT, **KW, **kw)
    assert sampler._reverse_process._cache_size() == before
