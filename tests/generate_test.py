"""The sampling command line: continue a prompt, infill masks, clear errors."""

import os
import pathlib
import subprocess
import sys

import jax
import pytest

from llada_jax import generate
from llada_jax.training import loop

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from train_helper import one_device_xla_flags, tiny_config  # noqa: E402

ROOT = pathlib.Path(__file__).parent.parent


class FakeTokenizer:
    def encode(self, text):
        return [ord(c) % 100 for c in text]

    def decode(self, ids):
        return "".join(chr(i + 32) for i in ids)

    def render_chat(self, messages, add_generation_prompt=True):
        return [1] + self.encode(messages[0]["content"]) + [2]


def test_encode_prompt_forms():
    tok = FakeTokenizer()
    assert generate.encode_prompt("ab<mask:3>c", None, tok, 99) == [97, 98, 99, 99, 99, 99]
    assert generate.encode_prompt(None, "5, -1, 7", None, 127) == [5, 127, 7]
    assert generate.encode_prompt("ab", None, tok, 99, chat=True) == [1, 97, 98, 2]
    with pytest.raises(ValueError, match="--prompt_ids='5,x'"):
        generate.encode_prompt(None, "5,x", None, 127)
    with pytest.raises(ValueError, match="use --prompt_ids"):
        generate.encode_prompt("text", None, None, 127)


def _cli(*args):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env["XLA_FLAGS"] = one_device_xla_flags()
    return subprocess.run([sys.executable, "-m", "llada_jax.generate", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env=env)


def test_cli_samples_and_infills_from_the_latest_checkpoint(tmp_path):
    # one device: cheaper to compile (checkpoint_test covers restoring 8-device checkpoints on 1)
    loop.train_and_evaluate(tiny_config(**{"train.steps": 2, "checkpoint.every": 1}), str(tmp_path),
                            devices=jax.devices()[:1])
    out = _cli(f"--workdir={tmp_path}", "--prompt_ids=3,4,5,-1,-1,8", "--gen_length=8", "--steps=4",
               "--block_length=4", "--show_ids")
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    assert lines[0] == "# checkpoint step 2"
    assert len(lines[1].split()) == 8  # the generated ids (synthetic run: no tokenizer)
    ids = [int(i) for i in lines[2].split(":")[1].split(",")]
    assert len(ids) == 6 + 8 and ids[:3] == [3, 4, 5] and ids[5] == 8 and 127 not in ids
    # pure infill: --gen_length=0 fills only the holes
    out = _cli(f"--workdir={tmp_path}", "--prompt_ids=3,-1,-1,6", "--gen_length=0", "--show_ids")
    assert out.returncode == 0, out.stderr[-3000:]
    ids = [int(i) for i in out.stdout.strip().splitlines()[2].split(":")[1].split(",")]
    assert len(ids) == 4 and ids[0] == 3 and ids[3] == 6 and 127 not in ids


def test_cli_error_without_a_training_run(tmp_path):
    out = _cli(f"--workdir={tmp_path}", "--prompt_ids=1,2")
    assert out.returncode != 0 and "no run.json" in out.stderr
