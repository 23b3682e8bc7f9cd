"""`make demo` (llada_jax.demo): its output sections, in the reduced --fast mode, with
nothing but the progress bar on stderr (no library warnings), the next commands it prints
running as printed from the repository root, and the step-by-step rendering of the reverse
process."""

import os
import pathlib
import re
import shlex
import subprocess
import sys

import numpy as np

from llada_jax import demo
from llada_jax.data import tasks
from train_helper import one_device_xla_flags  # noqa: E402

SECTIONS = ("[1/4] training", "MFU", "[2/4] the reverse process", "call 1 ", "threshold rule (keep",
            "[3/4] infill", "  masked  ", "  filled  ", "[4/4] parallel decoding", "one token per call",
            "threshold 0.9", "threshold rule:", "written to", "next (from the repository root):",
            " -m llada_jax.generate --workdir=")
ROOT = pathlib.Path(__file__).parent.parent


def test_fast_demo_prints_every_section_and_no_warnings(tmp_path):
    wd = tmp_path / "demo"
    env = dict(os.environ, XLA_FLAGS=one_device_xla_flags())  # one CPU device, as `make demo` on a CPU
    r = subprocess.run([sys.executable, "-m", "llada_jax.demo", "--fast", f"--workdir={wd}"],
                       capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    positions = [r.stdout.find(s) for s in SECTIONS]
    assert -1 not in positions, [s for s, p in zip(SECTIONS, positions) if p < 0]
    assert positions == sorted(positions)  # in this order
    # stderr holds the one progress bar (tqdm's carriage-return redraws) and nothing else
    lines = [ln for ln in re.split(r"[\r\n]", r.stderr) if ln.strip()]
    assert lines and all(re.match(r"^\s*\d+%\|", ln) for ln in lines), lines[:5]
    assert (wd / "metrics.jsonl").exists() and (wd / "checkpoints").is_dir()

    # the next commands run as printed (no activated venv: the interpreter is named)
    hints = [h.split("   #")[0].strip() for h in r.stdout.split("next (from the repository root):\n")[1].splitlines()
             if h.startswith("  ")]
    assert len(hints) == 3
    generate, tensorboard, train = map(shlex.split, hints)
    assert os.path.join(ROOT, generate[0]) == sys.executable and generate[1:3] == ["-m", "llada_jax.generate"]
    out = subprocess.run(generate, capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.startswith("# checkpoint step 8"), out.stderr[-2000:]
    assert tensorboard == ["make", "tensorboard", f"LOGDIR={wd / 'tensorboard'}"] and (wd / "tensorboard").is_dir()
    dry = subprocess.run(["make", "-n", *tensorboard[1:]], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert dry.returncode == 0 and f"tensorboard --logdir {wd / 'tensorboard'}" in dry.stdout, dry.stderr
    assert os.path.join(ROOT, train[0]) == sys.executable and (ROOT / train[3].split("=", 1)[1]).is_file()
    out = subprocess.run(train + ["--help"], capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)
    # absl's --help exits 1; the listed flags show that the module ran and loaded the config file
    assert "--workdir: output directory" in out.stdout and "error:" not in out.stderr, out.stderr[-2000:]


def test_hints_name_the_venv_interpreter_relative_to_the_working_directory(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "executable", str(tmp_path / ".venv" / "bin" / "python"))
    assert demo.interpreter() == os.path.join(".venv", "bin", "python")
    assert demo.next_commands("workdirs/demo", "1,2", 3)[0].startswith(".venv/bin/python -m llada_jax.generate ")
    monkeypatch.setattr(sys, "executable", "/opt/py/bin/python3")  # outside: the absolute path
    assert demo.interpreter() == "/opt/py/bin/python3"


def test_reverse_process_lines_reveal_each_call_and_bracket_it():
    task = tasks.make_task("sort", n_items=3, n_values=10, vocab_size=16, seq_len=9)
    ids = np.array([7, 2, 5, task.sep, 2, 5, 7, task.eos, task.eos])
    when = np.array([-1, -1, -1, -1, 1, 2, 0, 0, 1])  # 3 calls; the largest digit and an EOS first
    lines = demo.reverse_process_lines(ids, when, 3, task)
    assert lines[0].endswith(" 7  2  5  >  _  _  _  _  _ ")
    assert lines[1].endswith(" 7  2  5  >  _  _ [7][.] _ ")
    assert lines[2].endswith(" 7  2  5  > [2] _  7  . [.]")
    assert lines[3].endswith(" 7  2  5  >  2 [5] 7  .  . ")
