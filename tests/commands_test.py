"""Every command is a console script of setup.py (besides its `python -m llada_jax...` form),
each resolving to a function, and the README's commands are among them; every command
parses its flags with absl."""

import ast
import importlib
import os
import pathlib
import re
import subprocess
import sys

import pytest

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


def test_every_command_parses_its_flags_with_absl():
    """No command uses argparse; a flag mistake is one `error:` line naming the flag (exit 1),
    for the commands on a fresh FlagValues (`cli.parse`) and those under absl's app.run alike."""
    for path in (ROOT / "llada_jax").rglob("*.py"):
        assert "argparse" not in path.read_text(), path
    from llada_jax.checkpoint import repoint
    from llada_jax.data import prepare
    from llada_jax.interop import export, import_hf

    for main, argv, line in [
            (export.main, [], "error: --workdir, --out: required (--help lists the flags)"),
            (export.main, ["--workdir=w", "--out=o", "--dtype=int8"],
             "error: --dtype=int8: value should be one of <float32|bfloat16|float16>"),
            (import_hf.main, ["--src=s", "--workdir=w", "--dtypes=float32"],
             "error: --dtypes: unknown flag (the flags are --dtype, --src, --workdir; --help lists them)"),
            (prepare.main, ["--out=o", "--workers=two"], "error: --workers=two: invalid literal for int() with "
                                                         "base 10: 'two'"),
            (repoint.main, ["--workdir=w", "--base=b", "b2"],
             "error: unexpected arguments ['b2'] (flags are given as --name=value)")]:
        for _ in range(2):  # a fresh FlagValues per call: no flag is defined twice
            with pytest.raises(SystemExit) as e:
                main(argv)
            assert e.value.code == line
    run = [sys.executable, "-m", "llada_jax.export"]
    out = subprocess.run(run + ["--help"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and "  --workdir: training (or import) workdir" in out.stdout
    out = subprocess.run(run, capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 1 and out.stderr.splitlines() == [
        "error: --workdir, --out: required (--help lists the flags)"]
    out = subprocess.run([sys.executable, "-m", "llada_jax.generate", "--steps=abc"], capture_output=True, text=True,
                         cwd=ROOT)
    assert out.returncode == 1 and out.stderr.splitlines()[-1:] == [
        "error: --steps=abc: invalid literal for int() with base 10: 'abc'"]
