"""launch/: every script starts with its usage, parses, and `local.sh` runs a real
2-process training on 127.0.0.1 (CPU, gloo) end to end."""

import json
import os
import pathlib
import socket
import subprocess
import sys

import pytest
from train_helper import one_device_xla_flags  # noqa: E402

ROOT = pathlib.Path(__file__).parent.parent
LAUNCH = ROOT / "launch"
SCRIPTS = ("local.sh", "slurm_gpu.sh", "tpu_pod.sh")


def _env(**extra):
    env = dict(os.environ, XLA_FLAGS=one_device_xla_flags())  # one CPU device per process
    env.update(JAX_PLATFORMS="cpu", PYTHON=sys.executable, PATH=f"{pathlib.Path(sys.executable).parent}:"
               f"{env.get('PATH', '')}", **extra)
    return env


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("name", SCRIPTS)
def test_script_starts_with_usage_and_parses(name):
    path = LAUNCH / name
    lines = path.read_text().splitlines()
    assert lines[0] == "#!/usr/bin/env bash"
    header = [line for line in lines[1:8]]
    assert all(line.startswith("#") for line in header), f"{name}: expected a usage comment at the top"
    assert f"launch/{name}" in "\n".join(lines[1:12]), f"{name}: the usage comment shows no example command"
    assert os.access(path, os.X_OK), f"{name} is not executable"
    subprocess.run(["bash", "-n", str(path)], check=True)


def test_slurm_script_takes_coordinator_and_ids_from_slurm():
    env = _env(DRY_RUN="1", SLURM_JOB_NODELIST="gpu[003-006,010]", SLURM_NTASKS="5", PORT="23456")
    out = subprocess.run(["bash", str(LAUNCH / "slurm_gpu.sh"), "--config=configs/llada_8b.py",
                          "--workdir=/shared/run 1"], env=env, capture_output=True, text=True, check=True)
    assert "5 processes, coordinator gpu003:23456" in out.stderr
    assert out.stdout.startswith("srun ") and "JAX_PROCESS_ID=\\$SLURM_PROCID" in out.stdout
    assert "-m llada_jax.train --config=configs/llada_8b.py --workdir=/shared/run\\ 1" in out.stdout


@pytest.mark.parametrize("status,requeued", [(75, True), (0, False), (1, False)])
def test_slurm_script_requeues_a_run_that_saved_on_sigterm(tmp_path, status, requeued):
    """srun exiting 75 (llada_jax.training.loop.EXIT_PREEMPTED) makes the job requeue itself."""
    log = tmp_path / "calls"
    for name, body in (("srun", f'echo "srun $*" >> {log}; exit {status}'),
                       ("scontrol", f'[[ $1 == show ]] && {{ echo node1; exit 0; }}; echo "scontrol $*" >> {log}')):
        (tmp_path / name).write_text(f"#!/usr/bin/env bash\n{body}\n")
        (tmp_path / name).chmod(0o755)
    env = _env(SLURM_JOB_NODELIST="node1", SLURM_JOB_ID="42")
    env["PATH"] = f"{tmp_path}:{env['PATH']}"
    out = subprocess.run(["bash", str(LAUNCH / "slurm_gpu.sh"), "--config=c.py", "--workdir=w"], env=env,
                         capture_output=True, text=True)
    assert out.returncode == status, out.stderr
    assert ("scontrol requeue 42" in log.read_text()) == requeued


def test_tpu_script_runs_the_command_on_every_worker():
    env = _env(DRY_RUN="1", TPU_NAME="pod", ZONE="us-east5-a", PROJECT="proj")
    out = subprocess.run(["bash", str(LAUNCH / "tpu_pod.sh"), "--config=configs/llada_8b.py", "--workdir=gs://b/r"],
                         env=env, capture_output=True, text=True, check=True).stdout
    assert out.startswith("gcloud compute tpus tpu-vm ssh pod ")
    for part in ("--worker=all", "--zone=us-east5-a", "--project=proj", "llada_jax.train",
                 "--config=configs/llada_8b.py", "--workdir=gs://b/r"):
        assert part in out
    missing = subprocess.run(["bash", str(LAUNCH / "tpu_pod.sh"), "--config=x"], env=_env(),
                             capture_output=True, text=True)
    assert missing.returncode != 0 and "TPU_NAME" in missing.stderr


def test_local_two_processes_train_end_to_end(tmp_path):
    """Two processes on this host join one JAX run (gloo): mesh data=2 over one CPU device
    each only validates when both joined. They train 4 steps and checkpoint."""
    workdir = tmp_path / "run"
    args = ["--config=configs/tiny.py", f"--workdir={workdir}", "--config.data.source=synthetic",
            "--config.mesh.data=2", "--config.data.batch_size=8", "--config.data.seq_len=32",
            "--config.data.random_length_prob=0", "--config.model.d_model=32", "--config.model.n_layers=2",
            "--config.model.mlp_hidden_size=64", "--config.model.vocab_size=128",
            "--config.model.embedding_size=128", "--config.model.max_sequence_length=64",
            "--config.train.steps=4", "--config.train.log_every=1", "--config.train.eval_every=0",
            "--config.train.num_samples=0", "--config.train.peak_flops=1e9", "--config.optim.warmup_steps=1",
            "--config.optim.decay_steps=1", "--config.checkpoint.every=2"]
    env = _env(NPROC="2", PORT=str(_free_port()), LOG_DIR=str(tmp_path / "logs"))
    proc = subprocess.run([str(LAUNCH / "local.sh"), *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    log1 = (tmp_path / "logs" / "process_1.log")
    detail = f"{proc.stderr[-3000:]}\nprocess 1:\n{log1.read_text()[-3000:] if log1.exists() else '(no log)'}"
    assert proc.returncode == 0, detail
    assert "2 processes, coordinator 127.0.0.1:" in proc.stderr
    assert sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())[-1] == 4, detail
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["split"] == "train"][-1] == 4
    assert (workdir / "run.json").exists() and log1.exists()
