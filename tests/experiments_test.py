"""The experiments: reversal-curse data and reduced run, the likelihood measures, the
equal-FLOPs scaling comparison (reduced mode) and its notebook."""

import json
import math
import os
import pathlib
import sys

import jax
import numpy as np
import pytest

from llada_jax.experiments import (ar_bits_per_token, diffusion_bits_per_token, flops_per_step, greedy_ar,
                                   model_for, reversal, scaling)
from llada_jax.model import LLaDAConfig, init_params

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # configs/ lives at the repository root

from configs.experiments import reversal as reversal_config  # noqa: E402
from configs.experiments import scaling as scaling_config  # noqa: E402


def test_reversal_data_writes_set_a_only_forward_and_set_b_both_ways():
    set_a, set_b = reversal.make_facts(30, 20, 2, seed=3)
    names = [n for f in set_a + set_b for n in f]
    assert len(set(names)) == len(names) == 100  # every name used once
    rows = {tuple(r) for r in reversal.training_rows(set_a, set_b).tolist()}
    eos = [reversal.ID[reversal.EOS]]
    for p, c in set_a:
        assert tuple(reversal.encode(reversal.forward_sentence(p, c)) + eos) in rows
        assert tuple(reversal.encode(reversal.reverse_sentence(p, c)) + eos) not in rows
    for p, c in set_b:
        assert tuple(reversal.encode(reversal.reverse_sentence(p, c)) + eos) in rows
    assert len(rows) == 30 + 2 * 20
    prompts, targets = reversal.questions(set_a, "reverse")  # "<child> is the child of" -> parent
    assert reversal.decode(prompts[0]) == " ".join([*set_a[0][1], "is", "the", "child", "of"])
    assert reversal.decode(targets[0]) == " ".join(set_a[0][0])
    prompts, _ = reversal.questions(set_a, "parent_infill")
    assert (prompts[:, :2] == reversal.ID[reversal.MASK]).all()


def test_reversal_reduced_run_writes_table_and_plot(tmp_path):
    res = reversal.run(reversal_config.get_config("reduced"), str(tmp_path))
    for f in ("results.json", "table.md", "reversal.png"):
        assert (tmp_path / f).stat().st_size > 0
    ar, dm = res["models"]["autoregressive"], res["models"]["diffusion"]
    assert set(ar["set_a"]["accuracy"]) == {"forward", "reverse"}  # an AR model cannot infill
    assert set(dm["set_a"]["accuracy"]) == set(reversal.QUESTIONS)
    for entry in (ar, dm):
        for split in ("set_a", "set_b"):
            assert all(0.0 <= v <= 1.0 for v in entry[split]["accuracy"].values())
    assert ar["set_a"]["accuracy"]["forward"] > 0  # it learned some forward facts
    assert res["table"].count("\n") == 5 and "n/a" in res["table"]


def _uniform(kind):
    """A model whose output head is zero: every prediction is uniform over the vocabulary."""
    cfg = LLaDAConfig.tiny(vocab_size=64, embedding_size=64, mask_token_id=63, eos_token_id=62, pad_token_id=62)
    model = model_for(kind, cfg)
    params = init_params(model.config, jax.random.PRNGKey(0))
    params["ff_out"] = np.zeros_like(params["ff_out"])
    return model, params


def test_likelihood_measures_of_a_uniform_model_are_log2_vocab():
    rows = np.random.default_rng(0).integers(0, 60, (32, 16)).astype(np.int32)
    model, params = _uniform("autoregressive")
    assert ar_bits_per_token(model, params, rows, batch_size=4) == pytest.approx(6.0, abs=1e-4)
    model, params = _uniform("diffusion")
    # E[masked / p] = 1 per position: the ELBO of a uniform predictor is log2(V) too
    bits = diffusion_bits_per_token(model, params, rows, rng=jax.random.PRNGKey(1), num_t=16)
    assert bits == pytest.approx(6.0, rel=0.1)


def test_greedy_ar_follows_the_argmax_and_handles_left_padding():
    cfg = LLaDAConfig.tiny(vocab_size=64, embedding_size=64, mask_token_id=63, eos_token_id=62, pad_token_id=62)
    model = model_for("autoregressive", cfg)
    params = init_params(model.config, jax.random.PRNGKey(2))
    prompt = np.array([[5, 9, 11, 3]], np.int32)
    got = greedy_ar(model, params, prompt, 3)
    x = prompt.copy()
    apply = jax.jit(lambda x: model.apply({"params": params}, x))
    for _ in range(3):  # the plain loop
        nxt = np.argmax(np.asarray(apply(x))[:, -1], axis=-1)
        x = np.concatenate([x, nxt[:, None].astype(np.int32)], axis=1)
    np.testing.assert_array_equal(got, x[:, 4:])
    padded = np.array([[62, 62, 5, 9, 11, 3]], np.int32)
    np.testing.assert_array_equal(greedy_ar(model, params, padded, 3, attention_mask=padded != 62), got)


@pytest.fixture(scope="module")
def scaling_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("scaling")
    return out, scaling.run(scaling_config.get_config("reduced"), str(out))


def test_scaling_reduced_run_matches_flops_and_writes_curves(scaling_results):
    out, res = scaling_results
    assert (out / "loss_vs_flops.png").stat().st_size > 0
    with open(out / "results.json") as f:
        assert json.load(f)["runs"] == json.loads(json.dumps(res["runs"]))
    runs = res["runs"]
    sizes = {(r["d_model"], r["n_layers"]) for r in runs}
    assert len(sizes) >= 3 and len(runs) == 2 * len(sizes)
    budget = res["config"]["train"]["flops_budget"]
    for size in sizes:
        ar, dm = (next(r for r in runs if (r["d_model"], r["n_layers"]) == size and r["kind"] == k)
                  for k in ("autoregressive", "diffusion"))
        assert ar["steps"] == dm["steps"] and ar["train_flops"] == dm["train_flops"]  # equal compute
        assert ar["params"] == dm["params"]  # equal size
        assert ar["train_flops"] == pytest.approx(budget, rel=0.2)
        cfg = scaling.size_config(size[0], size[1], type("T", (), dict(mask_id=3, eos_id=2))(),
                                  res["config"]["data"]["seq_len"], res["config"]["data"]["vocab_size"])
        assert ar["flops_per_step"] == flops_per_step(cfg, res["config"]["train"]["batch_size"],
                                                      res["config"]["data"]["seq_len"])
        for r in (ar, dm):
            assert [p["flops"] for p in r["curve"]] == sorted(p["flops"] for p in r["curve"])
            assert r["curve"][-1]["flops"] == r["train_flops"]
            # trained below the uniform predictor's log2(vocab) bits
            assert all(0 < p["bits_per_token"] < math.log2(res["config"]["data"]["vocab_size"]) for p in r["curve"])
        assert set(ar["downstream"]) == {"prefix_only"} and set(dm["downstream"]) == {"prefix_only", "infill"}
    assert "| diffusion |" in scaling.summary(res)


def test_scaling_notebook_runs_on_results(scaling_results):
    import nbformat
    from nbclient import NotebookClient

    out, _ = scaling_results
    nb = nbformat.read(ROOT / "notebooks" / "scaling.ipynb", as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code")  # committed stripped
    os.environ["SCALING_RESULTS"] = str(out / "results.json")
    try:
        NotebookClient(nb, timeout=120, resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    finally:
        del os.environ["SCALING_RESULTS"]
    text = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert "| autoregressive |" in text
    assert any("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))
