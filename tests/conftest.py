"""Test set-up: 8 virtual CPU devices (set before jax is imported) and shared fixtures."""

import os
import shutil
import tempfile

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One persistent compilation cache for this test run, shared by the xdist workers and the
# subprocesses they start (the same tiny train steps are compiled in many processes). The
# first process to import this file (pytest's main process) names it; the workers and
# subprocesses inherit the variable. Removed at the end of the run (pytest_sessionfinish).
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(tempfile.gettempdir(), f"llada-jax-test-compiles-{os.getpid()}"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")

import pathlib  # noqa: E402

import pytest  # noqa: E402

DATA = pathlib.Path(__file__).parent / "data"


def pytest_sessionfinish(session):
    if not hasattr(session.config, "workerinput"):  # the main process, after every worker
        shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)


@pytest.fixture(scope="session")
def golden_dir():
    return DATA


@pytest.fixture(scope="session")
def golden_model():
    """(LLaDA module, params) of the tiny checkpoint in the published layout."""
    from llada_jax.interop import hf
    from llada_jax.model import LLaDA

    config, params = hf.load_pretrained(str(DATA / "llada-tiny"))
    return LLaDA(config), params
