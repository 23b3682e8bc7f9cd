"""benchmarks/device.py --smoke: every part runs at tiny shapes on the CPU and reports what it should."""

import contextlib
import io
import json
import math
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import device  # noqa: E402


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("device")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        device.main(["--smoke", f"--out={out}"])
    return out, [json.loads(line) for line in buf.getvalue().splitlines()]


def _numbers(row):
    return [v for v in row.values() if isinstance(v, (int, float)) and not isinstance(v, bool)]


def test_every_part_prints_its_figures(smoke):
    _, rows = smoke
    assert [r for r in rows if "error" in r or "skipped" in r] == []
    by = {}
    for r in rows:
        assert {"figure", "device"} <= set(r), r
        assert all(math.isfinite(x) for x in _numbers(r)), r
        by.setdefault(r["figure"], []).append(r)
    assert set(by) == {"environment", "attention_parity", "lora_memory", "matmul_peak", "train_step", "sampler",
                       "block_decode", "serving", "moe", "dream"}
    parts = [part for part, *_ in device.PARTS]  # every row names its part, in the parts' order
    assert [r["part"] for r in rows[1:]] == sorted((r["part"] for r in rows[1:]), key=parts.index)
    parity = by["attention_parity"]
    assert {(r["impl"], r["dtype"], r["case"]) for r in parity} == {
        ("chunked", "float32", "kv_cache"), ("chunked", "bfloat16", "kv_cache")}
    assert all(r["ok"] and max(r[f"err_{n}"] for n in ("out", "dq", "dk", "dv")) <= 1 for r in parity)
    (lora,) = by["lora_memory"]
    assert lora["plan_total_bytes"] > 0 and lora["measured_peak_bytes"] is None  # XLA:CPU has no memory_stats
    assert "llada_jax.plan" in lora["plan_command"] and "--config.lora.rank=16" in lora["plan_command"]
    (step,) = by["train_step"]
    assert step["attention"] == "chunked" and 0 < step["mfu"] and step["tokens_per_s"] > 0
    assert {r["method"] for r in by["sampler"]} == {"exact", "threshold_0.9+dual_cache"}
    assert all(r["model_calls"] >= 1 and r["tokens_per_s"] > 0 for r in by["sampler"] + by["block_decode"])
    (block,) = by["block_decode"]  # 16 denoising calls (one token each), the prompt's prefill, 2 block commits
    assert block["method"] == "block_cache" and block["block_length"] == 8 and block["model_calls"] == 19


def test_serving_rows_batch_the_requests(smoke):
    _, rows = smoke
    by = {(r["mode"], r["concurrency"]): r for r in rows if r["figure"] == "serving"}
    assert list(by) == [("engine", 2), ("engine", 1), ("sequential_generate", 1)]
    for r in by.values():  # 2 requests of 16 tokens: EOS is never sampled, every answer is whole
        assert r["requests"] == 2 and r["output_tokens"] == 2 * 16 and r["tokens_per_s"] > 0
        assert 0 < r["latency_p50_s"] <= r["latency_p99_s"]
    # 2 blocks of 4 steps per request: one slot runs them in turn, two slots side by side
    assert by[("engine", 1)]["model_calls"] == 16 and by[("engine", 2)]["model_calls"] == 8
    seq_s = by[("sequential_generate", 1)]["seconds"]
    assert all(r["speedup_vs_sequential"] == round(seq_s / r["seconds"], 3) for r in by.values())


def test_moe_and_dream_rows_train_and_run_forward(smoke):
    _, rows = smoke
    (moe,) = [r for r in rows if r["figure"] == "moe"]
    (dream,) = [r for r in rows if r["figure"] == "dream"]
    assert (moe["family"], moe["num_experts"], moe["num_experts_per_tok"], moe["n_layers_published"]) == (
        "lladamoe", 4, 2, 16)
    assert moe["active_matmul_params"] < moe["params"]  # 2 of 4 experts per token
    assert (dream["family"], dream["n_layers_published"]) == ("dream", 28)
    for r in (moe, dream):
        assert r["dtype"] == "bfloat16" and r["n_layers"] == 2 and r["seq_len"] == 64
        assert 0 < r["loss"] < 2 * math.log(256) and r["params_adam_gib"] == round(r["params"] * 12 / 2**30, 2)
        assert all(r[k] > 0 for k in ("train_tokens_per_s", "train_mfu", "forward_tokens_per_s", "forward_mfu"))


def test_it_writes_the_figures_and_a_table_and_keeps_them(smoke):
    out, rows = smoke
    with open(out / "figures.jsonl") as f:
        assert [json.loads(line)["figure"] for line in f] == [r["figure"] for r in rows]
    table = (out / "README.md").read_text()
    sections = {s.split("\n")[0]: s for s in table.split("\n## ")[1:]}
    assert list(sections) == [part for part, *_ in device.PARTS] and "| figure |" in sections["sampler"]
    assert "| matmul_peak |" in sections["train_step"] and "| dream |" in sections["moe"]
    with pytest.raises(SystemExit, match="already holds figures.jsonl: pass --overwrite"):
        device.main(["--smoke", f"--out={out}"])
