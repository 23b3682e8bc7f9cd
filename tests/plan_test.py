"""Capacity planning: the real train step compiled ahead of time for a virtual mesh."""

import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np

from llada_jax import plan
from llada_jax.model import from_config
from llada_jax.model import flops

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from train_helper import one_device_xla_flags, tiny_config  # noqa: E402

ROOT = pathlib.Path(__file__).parent.parent


def test_plan_reports_sharded_sizes_and_flops():
    c = tiny_config(**{"mesh.data": 1, "mesh.fsdp": 8})
    p = plan.plan(c)
    n = p["params"]
    # every matrix has an embed axis split 8 ways over fsdp; only the norm scales are replicated
    norms = (2 * 2 + 1) * 32
    assert p["params_bytes"] == 4 * ((n - norms) // 8 + norms)
    assert p["opt_state_bytes"] >= 2 * p["params_bytes"]  # AdamW mu and nu, plus the count
    assert p["temp_bytes"] > 0 and p["total_bytes"] >= p["temp_bytes"]
    mcfg = from_config.model_config(c, None)
    assert p["model_flops_per_step"] == flops.train_flops_per_token(mcfg, 32) * 8 * 32
    assert p["mesh"] == {"data": 1, "fsdp": 8, "tensor": 1}
    assert not any(isinstance(x, jax.Array) for x in p.values())  # a report, nothing allocated
    assert "temporaries" in plan.report(p)


def test_plan_cli_on_more_virtual_devices_than_the_test_process_has():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env["XLA_FLAGS"] = one_device_xla_flags()
    out = subprocess.run([sys.executable, "-m", "llada_jax.plan", "--config=configs/tiny.py", "--devices=16",
                          "--config.data.source=synthetic", "--config.mesh.fsdp=4", "--config.mesh.tensor=2"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "devices: 16" in out.stdout and "optimizer state" in out.stdout
    p = json.loads(out.stdout.strip().splitlines()[-1])
    assert p["mesh"] == {"data": 2, "fsdp": 4, "tensor": 2}
    assert np.isclose(p["model_flops_per_device"] * 16, p["model_flops_per_step"])
