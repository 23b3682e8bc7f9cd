"""The lm-eval adapter: Monte Carlo likelihood batched across requests, the greedy check,
batched generation, model loading, and an offline lm-eval CLI run of a multiple-choice
task (local JSONL + task YAML) that a tiny model trained here decides."""

import json
import os
import pathlib
import re
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from llada_jax.objectives import likelihood
from llada_jax.evaluation import harness
from llada_jax.experiments import random_batches, train_model
from llada_jax.model import LLaDAConfig

ROW_LEN = 8
ROOT = pathlib.Path(__file__).parent.parent


def _fact(n):  # the task: a digit, the last one of the number, follows "is"
    return f"{n} is {n % 10}."


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """A diffusion model trained on "37 is 7." facts, with its tokenizer, an HF export and
    a workdir, plus a multiple-choice lm-eval task (JSONL + YAML) in a folder."""
    from llada_jax.interop.export import save_pretrained
    from llada_jax.interop.import_hf import import_to_workdir
    from llada_jax.data.tokenizer import train_sentencepiece

    d = tmp_path_factory.mktemp("toy")
    corpus = d / "corpus.txt"
    corpus.write_text("".join(_fact(n) + "\n" for n in range(10, 100)) * 3)
    tok = train_sentencepiece([str(corpus)], str(d / "tok"), 300)
    rows = []
    for n in range(10, 100):
        ids = tok.encode(_fact(n)) + [tok.eos_id]
        assert len(ids) <= ROW_LEN
        rows.append(ids + [tok.eos_id] * (ROW_LEN - len(ids)))
    config = LLaDAConfig.tiny(vocab_size=320, embedding_size=320, max_sequence_length=64, rope_theta=10000.0,
                              mask_token_id=tok.mask_id, eos_token_id=tok.eos_id, pad_token_id=tok.eos_id)
    model, params, losses = train_model("diffusion", config, random_batches(np.asarray(rows, np.int32), 32, 0),
                                        steps=150, lr=3e-3, warmup_steps=20)
    assert losses[-20:].mean() < 0.5 * losses[:20].mean()
    save_pretrained(config, params, str(d / "hf"), dtype="float32", tokenizer=tok)
    import_to_workdir(str(d / "hf"), str(d / "workdir"))

    rng = np.random.default_rng(0)
    docs = []
    for n in rng.choice(np.arange(10, 100), 16, replace=False):
        # distractors: letters, never seen after "is" in the training data
        choices = [str(n % 10)] + list(rng.choice(list("qxzjkw"), 3, replace=False))
        order = rng.permutation(4)
        docs.append({"question": f"{n} is", "choices": [choices[i] for i in order],
                     "answer": int(np.argmin(order))})
    tasks = d / "tasks"
    tasks.mkdir()
    (tasks / "toy.jsonl").write_text("".join(json.dumps(x) + "\n" for x in docs))
    (tasks / "toy_digits.yaml").write_text(textwrap.dedent(f"""\
        task: toy_digits
        dataset_path: json
        dataset_kwargs:
          data_files:
            test: {tasks / 'toy.jsonl'}
        test_split: test
        output_type: multiple_choice
        doc_to_text: "{{{{question}}}}"
        doc_to_choice: "{{{{choices}}}}"
        doc_to_target: "{{{{answer}}}}"
        metric_list:
          - metric: acc
            aggregation: mean
            higher_is_better: true
        """))
    return dict(dir=d, tok=tok, model=model, params=params, tasks=tasks)


def _offline_env(tmp_path):
    env = dict(os.environ, HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               HF_HOME=str(tmp_path / "hf_home"), HF_DATASETS_CACHE=str(tmp_path / "hf_datasets"))
    return env


def _harness(toy, **kw):
    return harness.LLaDAEvalHarness(model=toy["model"], params=toy["params"], tokenizer=toy["tok"], **kw)


def test_loglikelihood_batched_equals_per_request_estimate(toy):
    lm = _harness(toy, mc_num=8, batch_size=4, max_rows=8)  # 2 requests per forward pass
    enc = toy["tok"].encode
    pairs = [(enc("37 is"), enc(" 7")), (enc("37 is"), enc(" q")), (enc("40 is"), enc(" 0.")),
             (enc("81 is"), enc(" 1"))]
    keys = [jax.random.PRNGKey(i) for i in range(len(pairs))]
    got = lm.loglikelihoods(pairs, keys)
    want = [likelihood.log_likelihood(toy["model"], toy["params"], p, a, rng=k, mc_num=8, batch_size=4,
                                     mask_id=toy["tok"].mask_id) for (p, a), k in zip(pairs, keys)]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert got[0] > got[1] + 1  # the trained fact is likelier than a letter never seen there


def test_loglikelihood_is_data_parallel_over_the_devices_with_one_device_results(toy, monkeypatch):
    enc = toy["tok"].encode
    pairs = [(enc(f"{n} is"), enc(f" {n % 10}")) for n in (37, 40, 81, 15, 62)]  # one shape: one chunk
    keys = [jax.random.PRNGKey(i) for i in range(len(pairs))]
    seen = []

    def spy(model, params, seqs, ks, **kw):
        seen.append(len(seqs.sharding.device_set))
        return likelihood.mc_nll(model, params, seqs, ks, **kw)

    monkeypatch.setattr(harness, "mc_nll", spy)
    one = _harness(toy, mc_num=8, batch_size=4, devices=jax.devices()[:1]).loglikelihoods(pairs, keys)
    lm = _harness(toy, mc_num=8, batch_size=4)
    assert lm.mesh.size == len(jax.devices()) == 8  # tests/conftest.py: 8 CPU devices
    many = lm.loglikelihoods(pairs, keys)
    assert seen == [1, 8]  # the 5 requests (padded to 8) split over the 8 devices
    np.testing.assert_allclose(many, one, rtol=1e-5, atol=1e-5)


def _official_greedy(model, params, prefix, target_len, mask_id):
    """The official adapter's check: unmask the continuation one token per step, always the
    most confident masked position (whole continuation, no blocks)."""
    seq = np.concatenate([prefix, np.full(target_len, mask_id)]).astype(np.int32)
    apply = jax.jit(lambda x: model.apply({"params": params}, x))
    for _ in range(target_len):
        logits = np.asarray(apply(jnp.asarray(seq[None])))[0]
        masked = np.flatnonzero(seq == mask_id)
        probs = jax.nn.softmax(logits[masked], axis=-1)
        x0 = np.argmax(logits[masked], axis=-1)
        best = int(np.argmax(np.asarray(probs)[np.arange(len(masked)), x0]))
        seq[masked[best]] = x0[best]
    return seq[len(prefix):]


def test_is_greedy_matches_the_official_unmasking_loop(toy):
    lm = _harness(toy)
    enc, mask_id = toy["tok"].encode, toy["tok"].mask_id
    prefixes = [enc("37 is"), enc("62 is"), enc("15 is")]
    pairs = []
    for p in prefixes:  # 4-token continuations: the order of unmasking matters
        want = _official_greedy(toy["model"], toy["params"], np.asarray(p), 4, mask_id)
        wrong = want.copy()
        wrong[-1] = (wrong[-1] + 1) % 300
        pairs += [(p, list(want)), (p, list(wrong))]
    assert lm.greedy_matches(pairs).tolist() == [True, False] * 3
    assert not _harness(toy, is_check_greedy=False).greedy_matches(pairs).any()


class _Req:
    def __init__(self, *args):
        self.args = args


def test_generate_until_batches_with_left_padding_and_cuts_at_stop(toy):
    contexts = ["37 is", "5", "81 is 1.\n42 is"]
    kw = dict(gen_length=8, steps=8, block_length=4, mc_num=3)
    one_by_one = [_harness(toy, batch_size=1, **kw).generate_until([_Req(c, {"until": []})])[0] for c in contexts]
    batched = _harness(toy, batch_size=3, **kw).generate_until([_Req(c, {"until": []}) for c in contexts])
    assert batched == one_by_one
    stop = batched[2][2:4]
    assert stop and stop in batched[2]
    cut = _harness(toy, batch_size=3, **kw).generate_until([_Req(contexts[2], {"until": [stop, "zz"]})])[0]
    assert cut == batched[2][:batched[2].index(stop)]
    assert harness.cut_at_stop("a.b\nc", ["\n", "."]) == "a"


def test_loglikelihood_rolling_is_a_clear_error(toy):
    with pytest.raises(NotImplementedError, match="not supported for masked diffusion"):
        _harness(toy).loglikelihood_rolling([_Req("some text")])


def test_options_are_validated(toy):
    with pytest.raises(ValueError, match="multiple of batch_size"):
        _harness(toy, mc_num=10, batch_size=4)
    with pytest.raises(ValueError, match="exactly one of"):
        harness.load_model()


def test_workdir_and_hf_directory_load_the_trained_model(toy):
    for source in (dict(workdir=str(toy["dir"] / "workdir")), dict(pretrained=str(toy["dir"] / "hf"))):
        config, params, tok = harness.load_model(**source)
        assert config.mask_token_id == toy["tok"].mask_id and tok.vocab_size == toy["tok"].vocab_size
        jax.tree_util.tree_map(np.testing.assert_array_equal, jax.device_get(params), jax.device_get(toy["params"]))


def test_cli_runs_offline_in_a_subprocess(toy, tmp_path):
    """The README's command: the toy task and the example task of examples/lm_eval (its
    YAML as committed, its data path relative to the repository root), with progress bars."""
    import shutil

    shutil.copy(ROOT / "examples" / "lm_eval" / "python_next.yaml", toy["tasks"])
    cmd = [sys.executable, "-m", "llada_jax.evaluation", "--model", "llada_jax", "--model_args",
           f"workdir={toy['dir'] / 'workdir'},mc_num=8,is_check_greedy=False", "--batch_size", "8",
           "--tasks", "toy_digits,python_next", "--include_path", str(toy["tasks"]),
           "--output_path", str(tmp_path / "out"), "--limit", "4"]  # 4 docs each: each length compiles
    proc = subprocess.run(cmd, env=_offline_env(tmp_path), capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [os.path.join(r, f) for r, _, fs in os.walk(tmp_path / "out") for f in fs if f.startswith("results")]
    assert len(results) == 1, proc.stdout[-2000:]
    with open(results[0]) as f:
        out = json.load(f)
    assert out["results"]["toy_digits"]["acc,none"] >= 0.6  # chance is 0.25
    assert 0 <= out["results"]["python_next"]["acc,none"] <= 1
    n_example = len((ROOT / "examples" / "lm_eval" / "python_next.jsonl").read_text().splitlines())
    assert out["n-samples"]["python_next"] == {"original": n_example, "effective": 4}
    # the likelihood's progress bar: 4 toy docs + 4 example docs, 4 choices each
    assert re.search(r"llada_jax loglikelihood: 100%.*\| 32/32 .*requests/s", proc.stderr), proc.stderr[-2000:]


def test_console_script_runs_lm_eval_cli():
    script = pathlib.Path(sys.executable).parent / "llada-lm-eval"
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "--model_args" in out.stdout
