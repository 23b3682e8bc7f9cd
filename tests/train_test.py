"""The train step and loop: sharded runs equal one device, two processes equal one,
gradient accumulation, random lengths without recompiles, SFT and FLOPs (the schedules: optimizer_test.py)."""

import concurrent.futures
import functools
import json
import math
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from llada_jax import objectives
from llada_jax.model import flops
from llada_jax.training import loop
from llada_jax.sampling import sampler
from llada_jax.parallel import sharding
from llada_jax.training import optimizer, step, train_state
from llada_jax.model import LLaDA, LLaDAConfig

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from train_helper import free_port, one_device_xla_flags, tiny_config  # noqa: E402

HELPER = str(pathlib.Path(__file__).parent / "train_helper.py")


def _params(state):
    return jax.tree_util.tree_map(np.asarray, state["params"])


def _max_diff(a, b):
    return max(float(np.max(np.abs(x - y))) for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


def test_flops_count_full_bidirectional_attention():
    cfg = LLaDAConfig.llada_8b()
    # 8,015,581,184 parameters minus the embedding table and the norm scales (the head is a matmul)
    assert flops.matmul_params(cfg) == 8_015_581_184 - 126464 * 4096 - (2 * 32 + 1) * 4096
    per_token = flops.train_flops_per_token(cfg, 4096)
    attention = 3 * 4 * 4096 * 4096 * 32  # 3 x (QK^T + PV) over all 4096 keys, 32 layers
    assert per_token == 6 * flops.matmul_params(cfg) + attention


SHARDED_OVER = {"train.steps": 3, "checkpoint.every": 0, "train.sample_prompt_len": 8,
                "train.sample_gen_length": 8, "train.sample_steps": 4}


@pytest.fixture(scope="module")
def one_device_run(tmp_path_factory):
    """(workdir, state, last metrics) of 3 steps on 1 device, with one eval and one sample:
    the reference of the sharded meshes and of the two processes (one compile for both)."""
    wd = tmp_path_factory.mktemp("one")
    cfg = tiny_config(**SHARDED_OVER, **{"train.eval_every": 3, "train.num_samples": 1, "mesh.data": 1})
    state, m = loop.train_and_evaluate(cfg, str(wd), devices=jax.devices()[:1])
    return wd, state, m


def test_sharded_meshes_match_one_device(tmp_path, one_device_run):
    """data=8, and fsdp=4 x tensor=2 (with gradient accumulation), give the loss and
    params of 1 device after 3 steps."""
    one_wd, one, m1 = one_device_run
    runs = {}
    for name, mesh in (("data8", (8, 1, 1)), ("fsdp4_tensor2", (1, 4, 2))):
        ev = {"optim.grad_accum": 2} if name == "fsdp4_tensor2" else {}  # 2 micro-batches of 4 = one of 8
        cfg = tiny_config(**SHARDED_OVER, **ev, **dict(zip(("mesh.data", "mesh.fsdp", "mesh.tensor"), mesh)))
        runs[name] = loop.train_and_evaluate(cfg, str(tmp_path / name))
    (d8, m8), (ft, mft) = runs["data8"], runs["fsdp4_tensor2"]
    assert d8["params"]["wte"].sharding.mesh.shape["data"] == 8
    assert ft["params"]["blocks"]["q_proj"].sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor", None)
    for other, m in ((d8, m8), (ft, mft)):
        assert abs(m["loss"] - m1["loss"]) < 1e-5 * abs(m1["loss"])
        assert _max_diff(_params(one), _params(other)) < 1e-6
    # metrics, eval and samples were logged (JSON lines and tensorboard)
    rows = [json.loads(line) for line in open(one_wd / "metrics.jsonl")]
    tr = [r for r in rows if r["split"] == "train"]
    assert {"loss", "masked_accuracy", "grad_norm", "lr", "tokens_per_s", "mfu"} <= set(tr[-1])
    ev = [r for r in rows if r["split"] == "eval"][-1]
    assert math.isclose(ev["bits_per_token"], ev["loss"] / math.log(2), rel_tol=1e-9)
    assert "⟶" in [r for r in rows if r["split"] == "samples"][-1]["sample_0"]
    assert any(p.name.startswith("events") for p in (one_wd / "tensorboard").iterdir())


def test_compile_ahead_runs_the_program_compiled_in_the_background():
    traces = []

    def double(x):
        traces.append(x.shape)
        return 2 * x

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        fn = step.compile_ahead(pool, jax.jit(double), jax.ShapeDtypeStruct((3,), jnp.float32))
        pool.submit(lambda: None).result()  # one worker: the compile is done
        assert traces == [(3,)]  # before any call
        np.testing.assert_array_equal(fn(jnp.arange(3.0)), [0.0, 2.0, 4.0])
        np.testing.assert_array_equal(fn(jnp.ones(3)), [2.0, 2.0, 2.0])
        assert traces == [(3,)]  # the calls ran that program
        np.testing.assert_array_equal(fn(jnp.ones(2, jnp.int32)), [2, 2])  # another type: compiled for it
        assert traces == [(3,), (2,)]


def test_random_lengths_compile_once(tmp_path):
    compiles = []
    jax.monitoring.register_event_duration_secs_listener(
        lambda name, *_a, **_k: compiles.append(name) if name == "/jax/core/compile/backend_compile_duration" else None)
    seen = {}
    hook = lambda at, state, m: seen.setdefault(at, len(compiles))  # noqa: E731
    cfg = tiny_config(**{"train.steps": 10, "checkpoint.every": 0, "data.random_length_prob": 0.7})
    loop.train_and_evaluate(cfg, str(tmp_path), hooks=[hook], devices=jax.devices()[:1])
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    lengths = {int(r["seq_len"]) for r in rows if r["split"] == "train"}
    assert len(lengths) >= 5 and 32 in lengths and min(lengths) < 32
    assert seen[10] == seen[1]  # no compilation between the first and the last step


def _sft_batch():
    rng = np.random.default_rng(0)
    prompts = np.array([[1, 10 + i, 20 + i, 2] for i in range(4)])
    answers = rng.integers(30, 120, size=(4, 12))
    ids = np.tile(np.concatenate([prompts, answers], 1), (2, 1)).astype(np.int32)
    prompt_mask = np.tile(np.arange(16) < 4, (8, 1))
    return ids, prompt_mask


def test_sft_never_masks_prompt_and_overfits(tmp_path):
    cfg = LLaDAConfig.tiny(d_model=64, n_heads=4, n_kv_heads=4, mlp_hidden_size=128, vocab_size=128,
                           embedding_size=128, mask_token_id=127, eos_token_id=126, pad_token_id=126)
    model = LLaDA(cfg)
    optim = tiny_config(**{"optim.lr": 3e-3, "optim.schedule": "constant", "optim.warmup_steps": 0,
                           "optim.weight_decay": 0.0}).optim
    tx, _ = optimizer.make_optimizer(optim, 200)
    mesh = sharding.make_mesh(dict(data=-1, fsdp=1, tensor=1), jax.devices()[:1])
    _, shardings = train_state.state_shardings(model, tx, mesh)
    state = train_state.init_state(model, tx, mesh, 0, shardings)
    st = step.Static(model, tx, "sft", 127, 1e-3, 0.0, 1)
    ids, prompt_mask = _sft_batch()
    batch = {"input_ids": jnp.asarray(ids), "prompt_mask": jnp.asarray(prompt_mask)}
    for seed in range(20):
        noisy, masked, _ = objectives.get(st.kind).noise(batch, jax.random.PRNGKey(seed), None, mask_id=st.mask_id,
                                                          eps=st.eps)
        assert not np.any(np.asarray(masked) & prompt_mask)
        np.testing.assert_array_equal(np.asarray(noisy)[prompt_mask], ids[prompt_mask])
    step_fn = step.compile_step(st, mesh, shardings, {"input_ids": 2, "prompt_mask": 2})
    for _ in range(200):  # training loss ~2e-3 by then (~2e-2 at 150)
        state, m = step_fn(state, batch)
        assert int(m["masked_prompt_tokens"]) == 0
    eval_loss = jax.jit(functools.partial(step.eval_loss, st=st))
    losses = [float(eval_loss(state["params"], batch, jax.random.PRNGKey(k))) for k in range(8)]
    assert np.mean(losses) < 0.05, losses
    out = sampler.generate(model, state["params"], ids[:1, :4], steps=12, gen_length=12, block_length=12,
                            mask_id=127, eos_id=126)
    np.testing.assert_array_equal(np.asarray(out)[0], ids[0])


def test_two_processes_match_one_process(tmp_path, one_device_run):
    """Two processes of 2 devices each (data=2 x fsdp=2) give the loss and params of the
    one-device run after 3 steps (the same run as the sharded meshes')."""
    over = {**SHARDED_OVER, "mesh.data": 2, "mesh.fsdp": 2}
    port = free_port()
    procs = []
    for pid in range(2):
        env = dict(os.environ, PYTHONPATH=str(pathlib.Path(__file__).parent.parent), JAX_PLATFORMS="cpu",
                   XLA_FLAGS=one_device_xla_flags() + " --xla_force_host_platform_device_count=2",
                   JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(pid))
        log = open(tmp_path / f"log{pid}.txt", "w")  # files, not pipes: a full pipe would block
        procs.append(subprocess.Popen([sys.executable, HELPER, str(tmp_path / "multi"), json.dumps(over)],
                                      stdout=log, stderr=subprocess.STDOUT, text=True, env=env))
    outs = []
    try:
        for pid, p in enumerate(procs):
            p.wait(timeout=300)
            out = (tmp_path / f"log{pid}.txt").read_text()
            assert p.returncode == 0, out[-3000:]
            outs.append(json.loads(out.split("RESULT ", 1)[1].splitlines()[0]))
            outs[-1]["params"] = dict(np.load(tmp_path / "multi" / f"params_{pid}.npz"))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    _, ref, m = one_device_run
    ref_params = {jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_leaves_with_path(ref["params"])}
    for o in outs:
        assert o["step"] == 3
        assert abs(o["loss"] - m["loss"]) < 1e-5 * abs(m["loss"])
        for k, v in ref_params.items():
            np.testing.assert_allclose(o["params"][k], v, atol=1e-6, rtol=0)
