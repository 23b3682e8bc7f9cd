"""Inheritance (llada_jax.training.inherit): a run from train.init_from (a Hugging Face
folder or a workdir) takes the family, shape, special ids and tokenizer from it, with no
--config.model.* flag; a shape field set against the base is an error naming both values;
a shapeless config on a prepared folder takes its vocabulary from the folder's tokenizer
(or names the flag that fixes a too-small one); the tokenizer is copied into the workdir, so
a restart, sampling and export survive the data folder's move or deletion."""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from llada_jax.checkpoint import load
from llada_jax.config import load_config_file
from llada_jax.data import documents, prepare, tokenizer
from llada_jax.interop import export, import_hf
from llada_jax.model import LLaDAConfig, init_params
from llada_jax.training import inherit, loop

ROOT = pathlib.Path(__file__).parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from train_helper import one_device_xla_flags  # noqa: E402

ONE = jax.devices()[:1]
# what a run needs besides its data: short, no evaluation, no MFU measurement (no shape here)
RUN = {"train.steps": 2, "train.log_every": 1, "train.eval_every": 0, "train.num_samples": 0,
       "train.peak_flops": 1e9, "optim.warmup_steps": 1, "optim.decay_steps": 1, "checkpoint.every": 0,
       "data.seq_len": 64, "data.batch_size": 4, "mesh.data": 1}


def _config(name, **over):
    c = load_config_file(str(ROOT / "configs" / f"{name}.py"))
    for key, value in {**RUN, **over}.items():
        section, field = key.split(".", 1)
        setattr(getattr(c, section), field, value)
    return c


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return tokenizer.train_sentencepiece(documents.stdlib_files("train")[:4], str(tmp_path_factory.mktemp("spm") / "tok"),
                                 400, max_bytes=40_000)


@pytest.fixture(scope="module")
def hf_base(tok, tmp_path_factory):
    """(folder, config, params): a 48-wide model of vocabulary 448 exported with its tokenizer."""
    cfg = LLaDAConfig(d_model=48, n_heads=4, n_kv_heads=2, n_layers=2, mlp_hidden_size=96, vocab_size=448,
                      embedding_size=448, max_sequence_length=64, rope_theta=5e4, mask_token_id=tok.mask_id,
                      eos_token_id=tok.eos_id, pad_token_id=tok.eos_id)
    params = init_params(cfg, jax.random.key(0))
    folder = str(tmp_path_factory.mktemp("hf") / "base")
    export.save_pretrained(cfg, params, folder, dtype="float32", tokenizer=tok.path)
    return folder, cfg, params


@pytest.fixture(scope="module")
def chat(tmp_path_factory):
    path = tmp_path_factory.mktemp("chat") / "chat.jsonl"
    path.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"add {i} and {i}"},
                                                     {"role": "assistant", "content": str(2 * i)}]}) + "\n"
                            for i in range(16)))
    return str(path)


def _model(workdir):
    with open(os.path.join(workdir, "run.json")) as f:
        return json.load(f)


def _same_as_base(info, cfg):
    for f in ("family", "d_model", "n_heads", "n_kv_heads", "n_layers", "mlp_hidden_size", "vocab_size",
              "embedding_size", "max_sequence_length", "rope_theta", "mask_token_id", "eos_token_id", "pad_token_id"):
        assert info["model"][f] == getattr(cfg, f), f
        assert info["config"]["model"][f] == getattr(cfg, f), f  # the resolved config: what a restart reads


def test_sft_and_lora_from_a_hf_folder_and_its_import_need_no_shape_flags(hf_base, chat, tok, tmp_path):
    folder, cfg, params = hf_base
    data = {"data.train_jsonl": chat}
    # LoRA straight from the Hugging Face folder: the frozen base is its params, bitwise
    lora_wd = str(tmp_path / "lora")
    state, last = loop.train_and_evaluate(_config("sft", **data, **{"train.init_from": folder, "lora.rank": 4,
                                                                      "lora.base_dtype": "float32"}), lora_wd, devices=ONE)
    assert int(state["step"]) == 2 and np.isfinite(last["loss"])
    for a, b in zip(jax.tree_util.tree_leaves(state["frozen"]), jax.tree_util.tree_leaves(params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    info = _model(lora_wd)
    _same_as_base(info, cfg)
    assert info["tokenizer"] == "tokenizer.model"  # the copy, workdir-relative, with its sha256
    assert info["tokenizer_sha256"] == tokenizer.load_tokenizer(tok.path).fingerprint
    assert open(os.path.join(lora_wd, "tokenizer.model"), "rb").read() == open(tok.path, "rb").read()
    # full SFT from the import_hf workdir of the same folder
    imported = str(tmp_path / "imported")
    import_hf.import_to_workdir(folder, imported)
    sft_wd = str(tmp_path / "sft")
    state, _ = loop.train_and_evaluate(_config("sft", **data, **{"train.init_from": imported}), sft_wd, devices=ONE)
    _same_as_base(_model(sft_wd), cfg)
    # the restart reads the run's own values: the base may be gone
    shutil.rmtree(imported)
    state, _ = loop.train_and_evaluate(_config("sft", **data, **{"train.init_from": imported, "train.steps": 3}),
                                       sft_wd, devices=ONE)
    assert int(state["step"]) == 3
    assert load.load_workdir(sft_wd).config.d_model == 48


def test_a_shape_field_set_against_the_base_names_both_values(hf_base, tmp_path):
    folder, _, _ = hf_base
    with pytest.raises(ValueError, match=r"config.model.d_model=256 but the base has d_model=48; "
                                         r"config.model.n_layers=5 but the base has n_layers=2"):
        loop.train_and_evaluate(_config("sft", **{"train.init_from": folder, "model.d_model": 256,
                                                  "model.n_layers": 5}), str(tmp_path / "w"), devices=ONE)
    assert not os.path.exists(tmp_path / "w")  # refused before anything is written
    # fields that are not the params' shape are the user's to change
    c = inherit.resolve(_config("sft", **{"train.init_from": folder, "model.max_sequence_length": 128,
                                          "model.rope_theta": 1e6, "model.d_model": 48}), say=lambda _: None)
    assert (c.model.max_sequence_length, c.model.rope_theta, c.model.d_model, c.model.n_kv_heads) == (128, 1e6, 48, 2)
    # the command line: one error line, before any compile
    out = subprocess.run([sys.executable, "-m", "llada_jax.train", "--config=configs/sft.py",
                          f"--workdir={tmp_path / 'cli'}", f"--config.train.init_from={folder}",
                          "--config.model.d_model=256"], cwd=ROOT, capture_output=True, text=True,
                         env=dict(os.environ, XLA_FLAGS=one_device_xla_flags(), JAX_PLATFORMS="cpu"))
    assert out.returncode == 1, out.stderr[-2000:]
    assert out.stderr.strip().splitlines()[-1].startswith(
        f"error: config.train.init_from='{folder}': config.model.d_model=256 but the base has d_model=48")


@pytest.fixture(scope="module")
def prep(tok, tmp_path_factory):
    """A prepared folder of a few KB of text, made with `tok` (400 pieces)."""
    src = tmp_path_factory.mktemp("corpus")
    for i, f in enumerate(documents.stdlib_files("train")[:4]):
        (src / f"a{i}.py").write_text(pathlib.Path(f).read_text()[:6000])
    out = str(tmp_path_factory.mktemp("prep") / "out")
    prepare.prepare([str(p) for p in sorted(src.iterdir())], out, tokenizer=tok.path, shard_bytes=8000,
                         workers=1, progress=False)
    return out


def test_tiny_on_a_prepared_folder_takes_its_vocabulary_and_survives_its_move(prep, tok, tmp_path):
    data = {"data.source": "prepared", "data.path": prep}
    with pytest.raises(ValueError, match=r"config.model.vocab_size=128: expected >= 400, the vocabulary of the "
                                         r"tokenizer .*; set --config.model.vocab_size=400$"):
        loop.train_and_evaluate(_config("tiny", **data, **{"model.vocab_size": 128}), str(tmp_path / "x"),
                                devices=ONE)
    wd = str(tmp_path / "run")
    moved = str(tmp_path / "moved")
    shutil.copytree(prep, moved)
    data = {"data.source": "prepared", "data.path": moved}
    loop.train_and_evaluate(_config("tiny", **data), wd, devices=ONE)
    info = _model(wd)
    assert info["model"]["vocab_size"] == 400 and info["model"]["embedding_size"] == 400
    assert info["model"]["mask_token_id"] == tok.mask_id and info["tokenizer"] == "tokenizer.model"
    again = str(tmp_path / "again")
    os.rename(moved, again)  # the data folder moves: the restart names its new place
    state, _ = loop.train_and_evaluate(_config("tiny", **{**data, "data.path": again, "train.steps": 3}), wd,
                                       devices=ONE)
    assert int(state["step"]) == 3
    shutil.rmtree(again)  # and is deleted: sampling and export read the workdir's copy
    w = load.load_workdir(wd)
    assert w.tokenizer.vocab_size == 400 and w.tokenizer.path == os.path.join(os.path.abspath(wd), "tokenizer.model")


def test_a_different_tokenizer_copy_is_never_overwritten(tok, tmp_path):
    wd = tmp_path / "w"
    wd.mkdir()
    (wd / "tokenizer.model").write_bytes(b"another")
    with pytest.raises(ValueError, match=r"holds .*tokenizer.model \(sha256 [0-9a-f]{12}\), another tokenizer than "
                                         r"this run's .* it is not overwritten"):
        inherit.copy_tokenizer(tok.path, str(wd))
    assert (wd / "tokenizer.model").read_bytes() == b"another"
    shutil.copyfile(tok.path, wd / "tokenizer.model")
    assert inherit.copy_tokenizer(tok.path, str(wd)) == str(wd / "tokenizer.model")  # identical: kept
