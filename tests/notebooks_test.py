"""notebooks/: committed without outputs; each one's first cell finds the repository (a clone,
or LLADA_JAX_REPO_URL) and installs every package the notebook imports; quickstart and the 8B
notebook run headless (nbclient) in the reduced mode (LLADA_NOTEBOOK_FAST=1: a few training
steps; the 8B notebook's dry mode with a tiny random model in the published layout). Any
failing cell fails the test."""

import json
import os
import pathlib
import re
import subprocess
import sys

import pytest
from train_helper import one_device_xla_flags  # noqa: E402

NOTEBOOKS = pathlib.Path(__file__).parent.parent / "notebooks"
NAMES = ("quickstart.ipynb", "llada_8b.ipynb")  # run headless (scaling's reduced run takes minutes)
ALL = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))
# import names of setup.py's install_requires (what installing llada_jax brings)
_SETUP = (NOTEBOOKS.parent / "setup.py").read_text()
_REQUIRES = re.findall(r'^\s+"([A-Za-z][\w.-]*)[<>=]', _SETUP[_SETUP.index("install_requires"):_SETUP.index(
    "extras_require")], re.M)
_IMPORT_NAMES = {"absl-py": "absl", "ml-collections": "ml_collections", "orbax-checkpoint": "orbax",
                 "prometheus-client": "prometheus_client"}
PROVIDED = {_IMPORT_NAMES.get(r, r.replace("-", "_")) for r in _REQUIRES} | {"llada_jax", "configs", "google"}


def _code_cells(nb):
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


@pytest.mark.parametrize("name", ALL)
def test_notebook_is_stripped_and_colab_ready(name):
    nb = json.loads((NOTEBOOKS / name).read_text())
    cells = _code_cells(nb)
    for i, cell in enumerate(cells):
        assert cell["outputs"] == [] and cell["execution_count"] is None, f"{name}: code cell {i} has outputs"
        assert "execution" not in cell.get("metadata", {}), f"{name}: code cell {i} has execution metadata"
    install = "".join(cells[0]["source"])
    assert "pip" in install and "install" in install and "LLADA_JAX_REPO_URL" in install, f"{name}: no install cell"
    assert 'find_spec("llada_jax") is None' in install, f"{name}: the install cell must be a no-op when installed"
    assert "LLADA_NOTEBOOK_FAST" in install
    assert "YOUR-ORG" not in json.dumps(nb), f"{name}: a placeholder repository URL"
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    # every package the notebook imports is installed by its first cell (NEEDS) or by llada_jax
    needs = eval(re.search(r"^NEEDS = (\{.*?\})", install, re.M)[1])
    code = "\n".join("".join(c["source"]) for c in cells)
    imported = {m.split(".")[0] for m in re.findall(r"^\s*(?:import|from) ([\w.]+)", code, re.M)}
    unmet = imported - set(sys.stdlib_module_names) - PROVIDED - set(needs)
    assert not unmet, f"{name}: imports {sorted(unmet)}, which its first cell does not install"


@pytest.mark.parametrize("name", ALL)
def test_install_cell_finds_the_clone_or_asks_for_the_url(name, tmp_path):
    """Inside the clone (the notebook's folder) it clones and installs nothing; outside one
    without LLADA_JAX_REPO_URL it stops with a message naming the variable."""
    install = "".join(_code_cells(json.loads((NOTEBOOKS / name).read_text()))[0]["source"])
    guard = ("import subprocess\n"
             "def _run(*a, **k): raise AssertionError(f'ran {a}')\n"
             "subprocess.run = _run\n")  # the kernel's subprocess only: any clone or pip call fails
    env = {k: v for k, v in os.environ.items() if k != "LLADA_JAX_REPO_URL"}
    inside = subprocess.run([sys.executable, "-c", guard + install], cwd=NOTEBOOKS, env=env, capture_output=True,
                            text=True, timeout=60)
    assert inside.returncode == 0, inside.stderr[-2000:]
    assert f"repository: {NOTEBOOKS.parent}" in inside.stdout
    outside = subprocess.run([sys.executable, "-c", guard + install], cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=60)
    assert outside.returncode == 1
    assert "RuntimeError: not inside a llada-jax clone" in outside.stderr and "LLADA_JAX_REPO_URL" in outside.stderr


@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_headless(name, tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("LLADA_NOTEBOOK_FAST", "1")
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setenv("XLA_FLAGS", one_device_xla_flags())  # one CPU device, as on a plain CPU runtime
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the notebooks' workdirs and exports
    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "hf_modules"))  # trust_remote_code's copy
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    # kernel "python3" is this interpreter (jupyter_client maps "python" to sys.executable)
    monkeypatch.setenv("PATH", f"{pathlib.Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", allow_errors=False,
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    outputs = [o for c in _code_cells(nb) for o in c["outputs"]]
    text = "".join(o.get("text", "") for o in outputs if o["output_type"] == "stream")
    images = sum("image/png" in o.get("data", {}) for o in outputs)
    if name == "quickstart.ipynb":
        assert images >= 2  # the loss curve and the reverse-process picture
        assert "call  0: def " in text and "infilled:" in text and "log p(" in text
        assert "max |PyTorch - JAX| logits" in text
    else:
        assert "dry mode: True" in text and "parameters loaded" in text
        assert "block_length=" in text and "threshold 0.9" in text
