"""training.loop.run_steps: metrics reach the host only at sync steps, in step order, and a
non-finite step found late still stops the run before any later state is saved; the
persistent compilation cache's folder rules (llada_jax.compile_cache)."""

import jax.numpy as jnp
import numpy as np
import pytest

from llada_jax import compile_cache
from llada_jax.training import loop


class FakeCheckpointer:
    """What run_steps needs of a Checkpointer: `every`, save, wait, latest_step."""

    def __init__(self, every):
        self.every, self.saved = every, []

    def save(self, step, state, data_state, force=False):
        self.saved.append(step)

    def wait(self):
        pass

    def latest_step(self):
        return self.saved[-1] if self.saved else None


def _run(events, steps, host_step, *, losses=None, ckpt=None, hooks=()):
    losses = losses or {}

    def update(state, batch):
        events.append(("update", batch))
        m = {"loss": jnp.float32(losses.get(batch, batch)), "grad_norm": jnp.float32(1.0)}
        return state + 1, m

    def report(step, state, m):
        assert isinstance(m["loss"], np.ndarray)  # a host copy, not a device array
        events.append(("report", step, float(m["loss"]), state))

    checkpoints = None if ckpt is None else loop.Checkpoints(ckpt, lambda: None, "/tmp/unused", say=lambda s: None)
    return loop.run_steps(0, 0, steps, next_batch=lambda step, state: step + 1, update=update,
                          report=(report,), hooks=hooks, host_step=host_step, checkpoints=checkpoints)


def test_metrics_are_read_at_sync_steps_only_and_in_order():
    events = []
    state, step, signal = _run(events, 7, lambda s: s % 3 == 0)
    assert (state, step, signal) == (7, 7, None)
    # steps 1-3 are dispatched before any is read; the last step always syncs
    assert [e[:2] for e in events] == [
        ("update", 1), ("update", 2), ("update", 3), ("report", 1), ("report", 2), ("report", 3),
        ("update", 4), ("update", 5), ("update", 6), ("report", 4), ("report", 5), ("report", 6),
        ("update", 7), ("report", 7)]
    assert [e[2] for e in events if e[0] == "report"] == [1, 2, 3, 4, 5, 6, 7]
    # the reports of a sync step see its (latest) state
    assert [e[3] for e in events if e[0] == "report"] == [3, 3, 3, 6, 6, 6, 7]


def test_hooks_or_no_host_step_sync_every_step():
    for kw in ({"host_step": None}, {"host_step": lambda s: False, "hooks": (lambda s, st, m: None,)}):
        events = []
        _run(events, 3, **kw)
        assert [e[:2] for e in events] == [("update", 1), ("report", 1), ("update", 2), ("report", 2),
                                          ("update", 3), ("report", 3)]


def test_checkpoint_steps_sync_and_a_late_found_nan_stops_before_saving():
    ckpt = FakeCheckpointer(every=2)
    _run([], 5, lambda s: False, ckpt=ckpt)
    assert ckpt.saved == [2, 4, 5, 5]  # due steps, then the last step's forced save

    ckpt = FakeCheckpointer(every=4)
    events = []
    with pytest.raises(loop.NonFiniteLossError, match=r"loss is nan at step 3: .*\(step None\)"):
        _run(events, 8, lambda s: False, losses={3: float("nan")}, ckpt=ckpt)
    assert ckpt.saved == []  # step 4's state came after the NaN: never saved
    assert [e for e in events if e[0] == "report"] == []


def test_compile_cache_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert compile_cache.default_dir() == str(tmp_path / "llada_jax" / "jax_cache")
    monkeypatch.setenv(compile_cache.ENV, "off")
    assert compile_cache.enable() is None
    monkeypatch.setenv(compile_cache.ENV, "0")
    assert compile_cache.enable() is None
