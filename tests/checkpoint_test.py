"""Checkpoints: restore across meshes, retention, half-written checkpoints, SIGKILL and
SIGTERM (one process, and one of two), non-finite losses."""

import json
import logging
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from llada_jax.checkpoint import manager
from llada_jax.training import loop
from llada_jax.parallel import sharding
from llada_jax.training import optimizer, train_state
from llada_jax.model import LLaDA, LLaDAConfig

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from train_helper import free_port, one_device_xla_flags, tiny_config  # noqa: E402

HELPER = str(pathlib.Path(__file__).parent / "train_helper.py")
CFG = LLaDAConfig.tiny(d_model=32, n_heads=4, n_kv_heads=2, mlp_hidden_size=64, vocab_size=128,
                       embedding_size=128, mask_token_id=127, eos_token_id=126, pad_token_id=126)


def _state(mesh_cfg, devices, seed=0, init=True):
    """(state, abstract state, shardings) on that mesh; state None unless init (a compile)."""
    model = LLaDA(CFG)
    tx, _ = optimizer.make_optimizer(tiny_config().optim, 10)
    mesh = sharding.make_mesh(mesh_cfg, devices)
    abstract, shardings = train_state.state_shardings(model, tx, mesh)
    return train_state.init_state(model, tx, mesh, seed, shardings) if init else None, abstract, shardings


def _host(tree):
    return jax.tree_util.tree_map(np.asarray, tree)


def _assert_same(a, b):
    for x, y in zip(jax.tree_util.tree_leaves(_host(a)), jax.tree_util.tree_leaves(_host(b))):
        np.testing.assert_array_equal(x, y)


def test_restore_onto_other_meshes(tmp_path):
    devs = jax.devices()
    state8, _, _ = _state(dict(data=1, fsdp=4, tensor=2), devs, seed=1)
    assert state8["params"]["wte"].sharding.shard_shape(state8["params"]["wte"].shape) == (64, 8)
    ck = manager.Checkpointer(str(tmp_path / "a"), every=1, keep=2)
    ck.save(1, state8, {"batch": 3})
    ck.close()
    # written on 8 devices, restored on 1
    _, abstract1, shard1 = _state(dict(data=1, fsdp=1, tensor=1), devs[:1], init=False)
    ck = manager.Checkpointer(str(tmp_path / "a"), every=1, keep=2)
    at, state1, data_state = ck.restore(manager.abstract_like(abstract1, shard1))
    assert at == 1 and data_state == {"batch": 3}
    assert state1["params"]["wte"].sharding.device_set == {devs[0]}
    _assert_same(state8, state1)
    # written on 1 device, restored on 8 (another layout)
    ck2 = manager.Checkpointer(str(tmp_path / "b"), every=1, keep=2)
    ck2.save(5, state1, None)
    ck2.wait()
    _, abstract8, shard8 = _state(dict(data=2, fsdp=2, tensor=2), devs, init=False)
    at, back, data_state = ck2.restore(manager.abstract_like(abstract8, shard8))
    assert at == 5 and data_state is None
    assert back["params"]["blocks"]["q_proj"].sharding == shard8["params"]["blocks"]["q_proj"]
    _assert_same(state1, back)
    ck.close(), ck2.close()


def test_every_n_keep_k_and_half_written_latest_is_skipped(tmp_path, caplog):
    state, abstract, shardings = _state(dict(data=-1, fsdp=1, tensor=1), jax.devices()[:1])
    ck = manager.Checkpointer(str(tmp_path), every=2, keep=2)
    saved = [s for s in range(1, 8) if ck.save(s, state, {"batch": s})]
    assert saved == [2, 4, 6]
    assert ck.save(7, state, {"batch": 7}, force=True)
    ck.wait()
    assert ck.all_steps() == [6, 7]
    ck.close()
    # damage the latest checkpoint's params as an interrupted write would
    for f in (tmp_path / "7" / "params").rglob("*"):
        if f.is_file():
            f.write_bytes(b"")
    ck = manager.Checkpointer(str(tmp_path), every=2, keep=2)
    with caplog.at_level(logging.WARNING):
        at, _, data_state = ck.restore(manager.abstract_like(abstract, shardings))
    ck.close()
    assert at == 6 and data_state == {"batch": 6}
    assert any("step 7" in r.getMessage() and "unreadable" in r.getMessage() for r in caplog.records)


def _run_helper(workdir, overrides, *flags, timeout=240):
    # one device: saving arrays replicated over 8 would compile a slice per leaf
    env = dict(os.environ, PYTHONPATH=str(pathlib.Path(__file__).parent.parent),
               XLA_FLAGS=one_device_xla_flags())  # the suite's compile flags: bitwise comparable
    return subprocess.run([sys.executable, HELPER, str(workdir), json.dumps(overrides), *flags],
                          capture_output=True, text=True, timeout=timeout, env=env)


def _final_params(state):
    return _host(state["params"])


def test_sigkill_mid_run_then_resume_is_bitwise_equal(tmp_path):
    over = {"train.steps": 7, "checkpoint.every": 2}
    one = jax.devices()[:1]  # as the helper's process has
    ref, _ = loop.train_and_evaluate(tiny_config(**over), str(tmp_path / "ref"), devices=one)
    killed = _run_helper(tmp_path / "run", over, "--kill-at=5")
    assert killed.returncode == -9, killed.stderr[-2000:]
    steps = manager.Checkpointer(manager.checkpoint_dir(str(tmp_path / "run")), read_only=True).all_steps()
    assert steps and max(steps) <= 5
    resumed, _ = loop.train_and_evaluate(tiny_config(**over), str(tmp_path / "run"), devices=one)
    assert int(resumed["step"]) == 7
    _assert_same(_final_params(ref), _final_params(resumed))
    rows = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    assert rows[-1]["step"] == 7


def test_sigterm_saves_and_exits_with_the_preempted_status(tmp_path):
    out = _run_helper(tmp_path, {"train.steps": 50, "checkpoint.every": 20}, "--term-at=3")
    assert out.returncode == loop.EXIT_PREEMPTED == 75, out.stderr[-2000:]
    assert "saved a checkpoint at step 3" in out.stderr + out.stdout
    result = json.loads(out.stdout.split("RESULT ", 1)[1])
    assert result["step"] == 3
    ck = manager.Checkpointer(manager.checkpoint_dir(str(tmp_path)), read_only=True)
    assert ck.all_steps() == [3]


def test_sigterm_to_one_of_two_processes_stops_both_after_one_step(tmp_path):
    """Two processes (one device each, data=2); process 1 sends itself SIGTERM after step 3.
    JAX's preemption sync makes both stop after the same later step, both save it (one
    collective checkpoint: a save at different steps would deadlock), both exit 75, and
    that checkpoint restores to the params both processes ended with."""
    over = {"train.steps": 100_000, "checkpoint.every": 100_000, "train.log_every": 100_000}
    port, procs, outs = free_port(), [], []
    try:
        for pid in range(2):
            env = dict(os.environ, PYTHONPATH=str(pathlib.Path(__file__).parent.parent), JAX_PLATFORMS="cpu",
                       XLA_FLAGS=one_device_xla_flags(), JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
                       JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(pid))
            log = open(tmp_path / f"log{pid}.txt", "w")  # files, not pipes: a full pipe would block
            procs.append(subprocess.Popen([sys.executable, HELPER, str(tmp_path / "run"), json.dumps(over)]
                                          + (["--term-at=3"] if pid == 1 else []),
                                          stdout=log, stderr=subprocess.STDOUT, env=env))
        for pid, p in enumerate(procs):
            p.wait(timeout=120)  # bounded: a deadlocked save or a missed agreement fails here
            out = (tmp_path / f"log{pid}.txt").read_text()
            assert p.returncode == loop.EXIT_PREEMPTED, out[-3000:]
            outs.append(json.loads(out.split("RESULT ", 1)[1].splitlines()[0]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    stopped = outs[0]["step"]
    assert outs[1]["step"] == stopped and 3 < stopped < over["train.steps"]
    ck = manager.Checkpointer(manager.checkpoint_dir(str(tmp_path / "run")), read_only=True)
    assert ck.all_steps() == [stopped]
    cfg = tiny_config(**over)
    tx, _ = optimizer.make_optimizer(cfg.optim, cfg.train.steps)
    abstract, shardings = train_state.state_shardings(LLaDA(CFG), tx, sharding.make_mesh(cfg.mesh, jax.devices()[:1]))
    at, state, data_state = ck.restore(manager.abstract_like(abstract, shardings))
    assert at == stopped == int(state["step"]) and data_state is not None
    final = dict(np.load(tmp_path / "run" / "params_0.npz"))
    for path, leaf in jax.tree_util.tree_leaves_with_path(state["params"]):
        np.testing.assert_array_equal(np.asarray(leaf), final[jax.tree_util.keystr(path)])

def test_nonfinite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    cfg = tiny_config(**{"optim.lr": 1e30, "optim.schedule": "constant", "optim.warmup_steps": 0,
                         "optim.clip_norm": 0.0, "train.steps": 8, "checkpoint.every": 1})
    with pytest.raises(loop.NonFiniteLossError, match=r" is (nan|inf|not finite).* at step (\d+).*last good checkpoint") as e:
        loop.train_and_evaluate(cfg, str(tmp_path), devices=jax.devices()[:1])
    bad = int(e.value.args[0].split("at step ")[1].split(":")[0])
    assert bad >= 2
    ck = manager.Checkpointer(manager.checkpoint_dir(str(tmp_path)), read_only=True)
    assert max(ck.all_steps()) == bad - 1
    assert f"step {bad - 1}" in e.value.args[0]
    # the last good checkpoint is good: finite params and optimizer state (issue 11, case 5)
    tx, _ = optimizer.make_optimizer(cfg.optim, cfg.train.steps)
    abstract, shardings = train_state.state_shardings(LLaDA(CFG), tx, sharding.make_mesh(cfg.mesh, jax.devices()[:1]))
    at, state, _ = ck.restore(manager.abstract_like(abstract, shardings))
    assert at == bad - 1 and bool(train_state.all_finite((state["params"], state["opt_state"])))
