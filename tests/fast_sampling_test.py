"""`benchmarks/fast_sampling.py --quick` on the committed task model: its table rows
have every field, the model sorts with the exact sampler, and the fastest rule keeps
its answers with a fraction of the model calls."""

import importlib.util
import json
import pathlib

import pytest

ROOT = pathlib.Path(__file__).parent.parent
FIELDS = {"gen_length", "batch", "method", "accuracy", "agreement", "model_calls", "tokens_per_s", "speedup"}


def _bench():
    spec = importlib.util.spec_from_file_location("fast_sampling", ROOT / "benchmarks" / "fast_sampling.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_quick_table_on_the_committed_model(capsys):
    bench = _bench()
    bench.main(["--quick"])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [r["method"] for r in rows] == list(bench.QUICK)
    exact, fast = rows
    assert FIELDS <= set(exact) and FIELDS <= set(fast)
    assert exact["rows"] == 16 and exact["agreement"] == 1.0 and exact["model_calls"] == 64
    assert exact["accuracy"] >= 0.8  # 16 held-out prompts; >= 90% on 128 (README table)
    assert fast["model_calls"] <= 64 / 4 and fast["agreement"] >= 0.8


def test_a_directory_without_task_json_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit, match="error: --model=.* holds no task.json"):
        _bench().main(["--quick", "--model", str(tmp_path)])
