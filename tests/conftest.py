"""Test set-up: 8 virtual CPU devices (set before jax is imported) and shared fixtures."""

import importlib.metadata
import os
import shutil
import tempfile

# The suite's CPU time is mostly XLA compiles of tiny programs: LLVM's expensive passes
# roughly double each compile and gain nothing at these shapes (measured: sampling_test +
# diffusion_test 87 -> 57 CPU s; a train-step compile 10.7 -> 5.2 s), and XLA:CPU's newer
# fusion emitters cost another 40% of it (the same two files, serially: 55-69 -> 38-42 user
# s). Results may differ from the default flags in the last bit, so every process of the
# suite uses these flags (subprocesses on one device: train_helper.one_device_xla_flags)
# for bitwise comparisons; the golden parity tests pass under them with their usual tolerances.
# jaxlib 0.12 has no such flag any more, and an unknown flag is fatal: ask by version only
# where it exists (the locked 0.10; `make test-latest` runs the newest without it).
_FAST_COMPILE = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
if tuple(int(x) for x in importlib.metadata.version("jaxlib").split(".")[:2]) < (0, 11):
    _FAST_COMPILE += " --xla_cpu_use_fusion_emitters=false"
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8 "
                           + _FAST_COMPILE).strip()
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


# The longest tests (worker seconds on the 2-core CI machine), started first so that the
# xdist workers do not end on one of them while the others idle; longest first.
SLOW_FIRST = (
    "device_test.py::",
    "experiments_test.py::test_scaling_reduced_run",
    "evaluation_test.py::test_cli_runs_offline",
    "demo_test.py::test_fast_demo_prints",
    "readme_test.py::test_readme_shell_commands_run",
    "notebooks_test.py::test_notebook_runs_headless",
    "train_test.py::test_sharded_meshes_match",
    "launch_test.py::test_local_two_processes",
    "checkpoint_test.py::test_sigterm_to_one_of_two_processes",
    "experiments_test.py::test_reversal_reduced_run",
    "train_test.py::test_two_processes_match",
    "block_diffusion_test.py::test_block_diffusion_converts",
    "serving_server_test.py::test_load_each_answer",
    "block_size_experiment_test.py::test_block_size_reduced_run",
)


def _module_fixture_files():
    """Test files with a module-scoped fixture (a training run, an export, ...)."""
    return {p.name for p in pathlib.Path(__file__).parent.glob("*_test.py") if 'scope="module"' in p.read_text()}


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """xdist's "load" (what -n gives), except that the tests of a file with a module-scoped
    fixture go to one worker together, so that fixture is built once, not once per worker.
    (xdist's own loadgroup cannot do this here: it renames items through an attribute
    this pytest no longer reads.)"""
    if config.getvalue("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    files = _module_fixture_files()

    class ModuleFixtureScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid):
            path = nodeid.split("::", 1)[0]
            return path if path.rsplit("/", 1)[-1] in files else nodeid

    return ModuleFixtureScheduling(config, log)


def pytest_collection_modifyitems(config, items):
    def rank(item):
        name = item.nodeid.rsplit("/", 1)[-1]
        return next((i for i, p in enumerate(SLOW_FIRST) if name.startswith(p)), len(SLOW_FIRST))

    items.sort(key=rank)  # stable: the rest keep their order
