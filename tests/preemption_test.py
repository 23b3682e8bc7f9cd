"""Multi-process preemption: SIGTERM to one of two processes (127.0.0.1, one CPU device
each, jax.distributed with a local coordinator) makes both save a checkpoint at the same
step and exit with EXIT_PREEMPTED (before, the stop flag was per process and the
collective save could deadlock)."""

import json
import os
import pathlib
import re
import socket
import subprocess
import sys

from train_helper import one_device_xla_flags

ROOT = pathlib.Path(__file__).parent.parent
HELPER = str(pathlib.Path(__file__).parent / "train_helper.py")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sigterm_to_one_process_stops_both_at_the_same_step(tmp_path):
    from llada_jax.training import loop

    over = {"mesh.data": 2, "model.n_layers": 1, "train.steps": 10_000, "checkpoint.every": 0,
            "checkpoint.async_save": False, "optim.decay_steps": 0}
    port, procs, workdir = _free_port(), [], tmp_path / "run"
    for pid in range(2):
        env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu", XLA_FLAGS=one_device_xla_flags(),
                   JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(pid))
        log = open(tmp_path / f"log{pid}.txt", "w")  # files, not pipes: a full pipe would block
        term = ["--term-at=3"] if pid == 1 else []  # only process 1 is signalled
        procs.append(subprocess.Popen([sys.executable, HELPER, str(workdir), json.dumps(over), *term],
                                      stdout=log, stderr=subprocess.STDOUT, text=True, env=env))
    saved = []
    try:
        for pid, p in enumerate(procs):
            p.wait(timeout=240)
            out = (tmp_path / f"log{pid}.txt").read_text()
            assert p.returncode == loop.EXIT_PREEMPTED, out[-3000:]
            found = re.findall(r"signal (\d+): saved a checkpoint at step (\d+); exiting", out)
            assert len(found) == 1 and found[0][0] == "15", out[-3000:]
            saved.append(int(found[0][1]))
            assert json.loads(out.split("RESULT ", 1)[1].splitlines()[0])["step"] == saved[-1]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert saved[0] == saved[1] >= 3  # the agreed step: not before the one process 1 was signalled at
    steps = sorted(int(d.name) for d in (workdir / "checkpoints").iterdir() if d.name.isdigit())
    assert steps == [saved[0]]
