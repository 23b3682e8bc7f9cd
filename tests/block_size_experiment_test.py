"""The block-size experiment's reduced mode: one row per (block size, sampler), equal
training FLOPs, the plot; the block cache spends fewer model FLOPs per token."""

import json
import pathlib
import sys

from llada_jax.experiments import block_size

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # configs/ lives at the repository root
from configs.experiments import block_size as block_size_config  # noqa: E402

KEYS = {"block_size", "sampler", "gen_length", "bits_per_token", "flops_per_token", "tokens_per_s", "accuracy"}


def test_block_size_reduced_run(tmp_path):
    res = block_size.run(block_size_config.get_config("reduced"), str(tmp_path))
    rows = res["rows"]
    assert (tmp_path / "block_size.png").stat().st_size > 0
    assert json.loads((tmp_path / "results.json").read_text())["rows"] == json.loads(json.dumps(rows))
    assert all(KEYS <= set(r) for r in rows)
    assert {r["sampler"] for r in rows} == {"block_cache", "llada_exact", "fast_dllm_dual_threshold"}
    budget = res["config"]["train"]["flops_budget"]
    for r in rows:  # the same training FLOPs, to within one step
        assert abs(r["train_flops"] - budget) <= r["train_flops"] / r["train_steps"]
        assert 0.0 <= r["accuracy"] <= 1.0 and r["bits_per_token"] > 0
    cache = next(r for r in rows if r["sampler"] == "block_cache" and r["threshold"] is None)
    exact = next(r for r in rows if r["sampler"] == "llada_exact")
    assert cache["flops_per_token"] < exact["flops_per_token"]
