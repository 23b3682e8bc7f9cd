"""Every command is a console script of setup.py (besides its `python -m llada_jax...` form),
each resolving to a function, and the README's commands are among them."""

import ast
import importlib
import os
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).parent.parent
# `python -m` module -> console script (experiments and benchmarks are not commands)
MODULES = {"llada_jax.demo": "llada-demo", "llada_jax.train": "llada-train", "llada_jax.rl": "llada-rl",
           "llada_jax.rl.pairs": "llada-rl-pairs", "llada_jax.generate": "llada-generate",
           "llada_jax.serve": "llada-serve", "llada_jax.evaluation": "llada-lm-eval",
           "llada_jax.prepare_data": "llada-prepare-data", "llada_jax.import_hf": "llada-import-hf",
           "llada_jax.export": "llada-export", "llada_jax.checkpoint.repoint": "llada-repoint",
           "llada_jax.plan": "llada-plan", "llada_jax.config": "llada-config"}


def _scripts() -> dict:
    tree = ast.parse((ROOT / "setup.py").read_text())
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "setup")
    entry = next(k.value for k in call.keywords if k.arg == "entry_points")
    lines = ast.literal_eval(entry)["console_scripts"]
    return dict(tuple(x.strip() for x in line.split("=")) for line in lines)


def test_every_command_is_a_console_script_of_a_function():
    scripts = _scripts()
    assert set(scripts) == set(MODULES.values())
    for name, target in scripts.items():
        module, func = target.split(":")
        assert callable(getattr(importlib.import_module(module), func)), name
    readme = (ROOT / "README.md").read_text()
    used = set(re.findall(r"python -m (llada_jax(?:\.\w+)+)", readme))
    assert used - set(MODULES) == {m for m in used if m.startswith("llada_jax.experiments")}


def test_an_installed_script_runs():
    script = os.path.join(os.path.dirname(sys.executable), "llada-config")
    out = subprocess.run([script, str(ROOT / "configs" / "demo.py")], capture_output=True, text=True)
    assert out.returncode == 0 and "model.n_layers = 4  # Transformer blocks" in out.stdout.splitlines()
    out = subprocess.run([script, "--bad"], capture_output=True, text=True)
    assert out.returncode == 1 and out.stderr.strip().splitlines() == [
        "error: arguments ['--bad']: expected none or one config file (configs/*.py)"]
