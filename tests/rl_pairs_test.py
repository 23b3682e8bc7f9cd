"""`python -m llada_jax.rl.pairs`: VRPO pairs from a policy's own scored samples, end to end
on a tiny sort-3 SFT model: the command writes a file that VRPO's reader accepts (the
correct sample chosen over an incorrect one), an HF folder of the same weights gives the same pairs, and an existing file is never
overwritten."""

import os
import subprocess
import sys

import numpy as np
import pytest

from llada_jax.model import build
from llada_jax.rl import pairs, rewards
from llada_jax.rl import sample_pairs
from llada_jax.training import loop
from train_helper import one_device_xla_flags, tiny_config  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TASK = {"data.kind": "sft", "data.task": "sort", "data.task_items": 3, "data.task_values": 10, "data.seq_len": 8}
# the command's overrides of configs/vrpo_sort.py for this task: answers of 4 tokens, 4 samples
FLAGS = ["--config.data.task_items=3", "--config.data.task_values=10", "--config.data.seq_len=8", "--config.rl.gen_length=4",
         "--config.rl.block_length=4", "--config.rl.sampler_steps=4", "--config.rl.num_generations=4"]


def _config(**kw):
    return tiny_config(**{**TASK, "data.batch_size": 16, "model.vocab_size": 16, "model.embedding_size": 16,
                                  "model.n_layers": 1, "model.mlp_hidden_size": 32, "optim.schedule": "constant",
                                  "optim.warmup_steps": 0, "optim.decay_steps": 0, "optim.lr": 1e-2,
                                  "train.steps": 100, "train.log_every": 50, "checkpoint.every": 100,
                                  "checkpoint.async_save": False, **kw})


@pytest.fixture(scope="module")
def sft(tmp_path_factory):
    """An SFT workdir trained halfway on sort-3 (some samples right, some wrong)."""
    wd = tmp_path_factory.mktemp("sft") / "wd"
    loop.train_and_evaluate(_config(), str(wd))
    return wd


def _command(*args):
    env = dict(os.environ, XLA_FLAGS=one_device_xla_flags(), JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, "-m", "llada_jax.rl.pairs", "--config=configs/vrpo_sort.py", *FLAGS,
                           *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_pairs_command_writes_what_vrpo_reads(sft, tmp_path):
    out = tmp_path / "pairs.jsonl"
    proc = _command(f"--policy={sft}", f"--out={out}", "--num_prompts=32", "--seed=3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    mcfg = build(sample_pairs.load_policy(str(sft))[0]).config
    p, w, l = pairs.read(  # as the VRPO run reads it (rl.loop)
        str(out), eos_id=mcfg.eos_token_id, vocab_size=mcfg.vocab_size, mask_id=mcfg.mask_token_id)
    assert f"{len(p)} pairs from 32 prompts" in proc.stdout
    assert 1 <= len(p) < 32 and p.shape[1] == 4 and w.shape[1] == l.shape[1] == 4
    task = sample_pairs.task_of(_config(), mcfg)
    want = rewards.expected_answer(task, p, 4)
    np.testing.assert_array_equal(w, want)  # sort_exact: the correct sample is chosen ...
    assert not np.any(np.all(l == want, axis=1))  # ... over an incorrect one

    # the same weights as a Hugging Face folder: the same pairs (a pure function of params and seed)
    from llada_jax.interop.export import save_pretrained

    cfg, params = sample_pairs.load_policy(str(sft))
    save_pretrained(cfg, params, str(tmp_path / "hf"), dtype="float32")
    hcfg, hparams = sample_pairs.load_policy(str(tmp_path / "hf"))
    config = _config()
    config.rl.update(gen_length=4, block_length=4, sampler_steps=4, num_generations=4, temperature=1.0)
    hp, hw, hl, _ = sample_pairs.sample_pairs(build(hcfg), hparams, task, config.rl, num_prompts=32, seed=3)
    np.testing.assert_array_equal(hp, p)
    np.testing.assert_array_equal(hw, w)
    np.testing.assert_array_equal(hl, l)


def test_pairs_command_refuses_an_existing_file_and_bad_input(sft, tmp_path):
    out = tmp_path / "mine.jsonl"
    out.write_text("the user's file\n")
    proc = _command(f"--policy={sft}", f"--out={out}")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == f"error: --out={str(out)!r} exists; give a new path (it is " \
                                                   "never overwritten)"
    assert out.read_text() == "the user's file\n"
    with pytest.raises(ValueError, match="expected a training workdir .run.json. or a Hugging Face folder"):
        sample_pairs.load_policy(str(tmp_path))
    with pytest.raises(ValueError, match="eos_token_id=13 but the task config.data.task='sort' uses 14"):
        sample_pairs.task_of(_config(), sample_pairs.load_policy(str(sft))[0].replace(eos_token_id=13))  # another task's policy
