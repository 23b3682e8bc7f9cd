"""`python -m llada_jax.generate --prompts_jsonl=IN --out=OUT`: every line through the serving
engine, answers in order and equal to each prompt's lone answer; a bad line is one error
naming its number and field, before any work; an existing --out is never overwritten."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from llada_jax import generate
from llada_jax.sampling.params import SamplingParams
from llada_jax.serving.engine import Engine

ROOT = pathlib.Path(__file__).parent.parent
DEFAULTS = dict(gen_length=8, steps=8, block_length=4, temperature=0.0, seed=0)


def _write(path, lines):
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return str(path)


def test_batched_answers_are_the_lone_answers_in_order(golden_model, tmp_path):
    model, params = golden_model
    lines = [{"prompt": [5, 9, 11]}, {"prompt": [7, 8, 1, 4], "temperature": 1.0, "seed": 3},
             {"prompt": [20, 21], "steps": 4}, {"prompt": [30, 31, 32, 33, 34]}, {"prompt": [6]}]
    src, out = _write(tmp_path / "in.jsonl", lines[:2] + [""] + lines[2:]), str(tmp_path / "out.jsonl")
    assert generate.generate_jsonl(model, params, None, src, out, DEFAULTS, slots=2) == 5
    got = [json.loads(x) for x in open(out)]
    assert [g["line"] for g in got] == [1, 2, 4, 5, 6]
    eng = Engine(model, params, slots=2, buckets=(16,), block_width=4)  # the buckets the file used
    for i, (line, g) in enumerate(zip(lines, got)):
        fields = {**DEFAULTS, "seed": i, **{k: v for k, v in line.items() if k != "prompt"}}
        alone = eng.generate([line["prompt"]], SamplingParams(**fields))[0]
        assert g["tokens"] == alone.tokens and g["finish_reason"] == alone.finish_reason
        assert g["text"] == " ".join(map(str, alone.tokens))
    with pytest.raises(ValueError, match="--out=.* exists"):  # never overwritten
        generate.generate_jsonl(model, params, None, src, out, DEFAULTS)


@pytest.mark.parametrize("line,match", [
    ("{not json", "line 2: not JSON"),
    ('["a"]', "line 2: expected an object"),
    ('{"text": "hi"}', "line 2: field 'prompt'=None"),
    ('{"prompt": [1, "x"]}', "line 2: field 'prompt'="),
    ('{"prompt": [1], "temprature": 1}', "line 2: unknown field 'temprature'"),
    ('{"prompt": [1], "temperature": -1}', "line 2: SamplingParams: temperature=-1"),
    ('{"prompt": [1], "block_length": 3}', "line 2: SamplingParams: block_length=3"),
    ('{"prompt": [255]}', "line 2: prompt: expected 1 or more token ids"),
    ('{"prompt": [1], "gen_length": 4096, "steps": 8, "block_length": 4096}', "line 2: field 'prompt'"),
])
def test_a_bad_line_is_named(golden_model, tmp_path, line, match):
    model, params = golden_model
    src = _write(tmp_path / "in.jsonl", [{"prompt": [1, 2]}, line])
    with pytest.raises(ValueError, match=match):
        generate.generate_jsonl(model, params, None, src, str(tmp_path / "out.jsonl"), DEFAULTS)
    assert not os.path.exists(tmp_path / "out.jsonl")


def test_cli_bad_line_is_one_error_line(tmp_path):
    src = _write(tmp_path / "in.jsonl", [{"prompt": "hi"}, {"prompt": "x", "temprature": 1}])
    (tmp_path / "out.jsonl").write_text("keep\n")
    args = [sys.executable, "-m", "llada_jax.generate", f"--workdir={tmp_path}", f"--prompts_jsonl={src}"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run(args + [f"--out={tmp_path / 'new.jsonl'}"], capture_output=True, text=True, timeout=120,
                       env=env, cwd=ROOT)
    assert r.returncode != 0 and r.stderr.strip().splitlines()[-1].startswith("error: --prompts_jsonl=")
    assert "line 2: unknown field 'temprature'" in r.stderr
    r = subprocess.run(args + [f"--out={tmp_path / 'out.jsonl'}"], capture_output=True, text=True, timeout=120,
                       env=env, cwd=ROOT)
    assert r.returncode != 0 and "exists" in r.stderr.strip().splitlines()[-1]
    assert (tmp_path / "out.jsonl").read_text() == "keep\n"
