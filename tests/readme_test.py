"""The README cannot rot: every ```python block runs as it stands, and every ```bash block
marked `<!-- test -->` runs, in README order, in one scratch directory that sees configs/
and launch/ (so later commands use what earlier ones made, e.g. the `runs/tiny` workdir).

Conventions in README.md: a ```python block right after `<!-- not tested: why -->` is
skipped (it needs the 8B download, say); ```bash blocks run only when marked
`<!-- test -->`, so mark only cheap commands (seconds on a CPU)."""

import os
import pathlib
import re
import subprocess
import sys

import pytest
from train_helper import one_device_xla_flags  # noqa: E402

ROOT = pathlib.Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()
FENCE = re.compile(r"(?:<!--(?P<mark>[^>]*)-->\s*\n)?```(?P<lang>\w*)\n(?P<body>.*?)```", flags=re.S)
BLOCKS = [(m["lang"], (m["mark"] or "").strip(), m["body"]) for m in FENCE.finditer(README)]
PYTHON = [body for lang, mark, body in BLOCKS if lang == "python" and not mark.startswith("not tested")]
SHELL = [body for lang, mark, body in BLOCKS if lang == "bash" and mark == "test"]


def test_readme_starts_with_the_two_commands():
    lang, _, body = BLOCKS[0]
    assert lang == "bash" and body.splitlines()[0].startswith("make demo")
    assert body.splitlines()[1].startswith("make test")


def test_readme_has_examples():
    assert len(PYTHON) >= 3 and len(SHELL) >= 4
    skipped = [b for lang, mark, b in BLOCKS if lang == "python" and mark.startswith("not tested")]
    assert len(skipped) <= 3, "most python examples must run"


def test_readme_names_existing_files():
    for path in set(re.findall(r"`((?:configs|launch|notebooks|llada_jax|tests)/[\w./]+)`", README)):
        assert (ROOT / path).exists(), f"README names {path}, which does not exist"


@pytest.mark.parametrize("index", range(len(PYTHON)))
def test_readme_python_block_runs(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(PYTHON[index], f"README.md[python block {index}]", "exec"), {"__name__": "__readme__"})


def test_readme_shell_commands_run(tmp_path):
    for name in ("configs", "launch"):
        (tmp_path / name).symlink_to(ROOT / name)
    env = dict(os.environ, XLA_FLAGS=one_device_xla_flags())  # one CPU device, as a plain CPU
    env.update(JAX_PLATFORMS="cpu", PATH=f"{pathlib.Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}")
    for i, body in enumerate(SHELL):
        proc = subprocess.run(["bash", "-euo", "pipefail", "-c", body], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"README bash block {i} failed:\n{body}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    assert (tmp_path / "runs" / "tiny" / "checkpoints").is_dir()
    assert (tmp_path / "runs" / "tiny-hf" / "config.json").is_file()
