"""Test set-up: 8 virtual CPU devices (set before jax is imported) and shared fixtures."""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pathlib  # noqa: E402

import pytest  # noqa: E402

DATA = pathlib.Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def golden_dir():
    return DATA


@pytest.fixture(scope="session")
def golden_model():
    """(LLaDA module, params) of the tiny checkpoint in the published layout."""
    from llada_jax import hf
    from llada_jax.model import LLaDA

    config, params = hf.load_pretrained(str(DATA / "llada-tiny"))
    return LLaDA(config), params
