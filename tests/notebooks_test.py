"""notebooks/: committed without outputs, and both run headless (nbclient) in the reduced
mode (LLADA_NOTEBOOK_FAST=1: a few training steps; the 8B notebook's dry mode with a tiny
random model in the published layout). Any failing cell fails the test."""

import json
import os
import pathlib
import sys

import pytest
from train_helper import one_device_xla_flags  # noqa: E402

NOTEBOOKS = pathlib.Path(__file__).parent.parent / "notebooks"
NAMES = ("quickstart.ipynb", "llada_8b.ipynb")


def _code_cells(nb):
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_stripped_and_colab_ready(name):
    nb = json.loads((NOTEBOOKS / name).read_text())
    cells = _code_cells(nb)
    for i, cell in enumerate(cells):
        assert cell["outputs"] == [] and cell["execution_count"] is None, f"{name}: code cell {i} has outputs"
        assert "execution" not in cell.get("metadata", {}), f"{name}: code cell {i} has execution metadata"
    install = "".join(cells[0]["source"])
    assert "pip" in install and "install" in install and "REPO_URL" in install, f"{name}: no install cell"
    assert 'find_spec("llada_jax") is None' in install, f"{name}: the install cell must be a no-op when installed"
    assert "LLADA_NOTEBOOK_FAST" in install
    assert nb["metadata"]["kernelspec"]["name"] == "python3"


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
