"""Nothing silent, nothing late, round two (issue 25): data preparation, the mask id in
data, options that mean nothing, and config errors named before anything compiles.
A character-level tokenizer.json (built here) keeps every case free of training."""

import json
import os
import pathlib
import sys

import pytest

from llada_jax.checkpoint import workdir as workdir_lib
from llada_jax.data import pipeline, prepare, tokenizer
from llada_jax.evaluation import harness
from llada_jax.generate import sample
from llada_jax.model import LLaDAConfig, build
from llada_jax.rl import pairs
from llada_jax.config import rules, rules_rl
from llada_jax.training import inputs

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from train_helper import tiny_config  # noqa: E402


def make_tokenizer(path, extra=""):
    """A character-level tokenizer.json with the special tokens (another `extra`: another tokenizer)."""
    from tokenizers import Tokenizer, models

    specials = [tokenizer.SPECIAL_TOKENS[k] for k in tokenizer.SPM_IDS]
    chars = list("abcdefghijklmnopqrstuvwxyz .,:\n" + extra)
    tk = Tokenizer(models.BPE({t: i for i, t in enumerate(["[UNK]"] + specials + chars)}, [], unk_token="[UNK]"))
    tk.add_special_tokens(specials)
    tk.save(str(path))
    return str(path)


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return tokenizer.load_tokenizer(make_tokenizer(tmp_path_factory.mktemp("tok") / "tokenizer.json"))


# ------------------------------------------------------------------- prepare_data
def test_a_long_line_is_never_cut_inside_a_utf8_character(tmp_path, monkeypatch):
    monkeypatch.setattr(prepare, "_PIECE_BYTES", 7)
    f = tmp_path / "long.txt"
    text = "aé€😀b" * 9  # 1-, 2-, 3- and 4-byte characters, no newline
    f.write_text(text)
    pieces = list(prepare._text_pieces(str(f)))
    assert all(n == 0 for _, n in pieces) and "".join(p for p, _ in pieces) == text


@pytest.mark.parametrize("args,match", [
    (["--workers=0"], r"--workers=0: expected an integer >= 1"),
    (["--workers=-2"], r"--workers=-2"),
    (["--out={file}"], r"--out=.*is a file; expected a new directory"),
    (["--verify", "--out={tmp}/none"], r"--out=.*none.*no index.json"),
    (["--inputs={tmp}/bad.parquet"], r"bad.parquet: not a readable Parquet file"),
])
def test_prepare_data_names_the_bad_option(tmp_path, tok, args, match):
    (tmp_path / "a.txt").write_text("abc\n")
    (tmp_path / "file").write_text("x")
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 not really")
    base = [f"--inputs={tmp_path / 'a.txt'}", f"--out={tmp_path / 'out'}", f"--tokenizer={tok.path}"]
    args = [a.format(file=tmp_path / "file", tmp=tmp_path) for a in args]
    given = {a.split("=")[0] for a in args}
    with pytest.raises(SystemExit, match=rf"error: .*{match}"):
        prepare.main([a for a in base if a.split("=")[0] not in given] + args)


def test_two_prepare_data_runs_on_one_out_say_in_use(tmp_path, tok):
    (tmp_path / "a.txt").write_text("abc\n")
    out = tmp_path / "out"
    out.mkdir()
    with workdir_lib.lock(str(out), "prepare_data", flag="--out"):  # the other, running one
        with pytest.raises(SystemExit, match=rf"error: --out='{out}' is in use: prepare_data run pid {os.getpid()}"):
            prepare.main([f"--inputs={tmp_path / 'a.txt'}", f"--out={out}", f"--tokenizer={tok.path}"])
    assert os.listdir(out) == []


# --------------------------------------------------------------- the mask in data
def test_the_mask_token_in_training_data_is_refused_with_file_and_line(tmp_path, tok):
    text = tmp_path / "doc.txt"
    text.write_text("abc\nde\nf <|mdm_mask|> g\n")
    with pytest.raises(ValueError, match=rf"{text}:3: the data holds the mask token <\|mdm_mask\|> \(id 3\)"):
        pipeline.pretrain_rows([str(text)], tok, 16, use_cache=False)
    with pytest.raises(SystemExit, match=rf"error: {text}:3: the data holds the mask token"):
        prepare.main([f"--inputs={text}", f"--out={tmp_path / 'p'}", f"--tokenizer={tok.path}", "--workers=1"])
    chat = tmp_path / "chat.jsonl"
    ok = {"messages": [{"role": "user", "content": "ab"}, {"role": "assistant", "content": "cd"}]}
    bad = {"messages": [{"role": "user", "content": "ab"}, {"role": "assistant", "content": "c<|mdm_mask|>"}]}
    chat.write_text(json.dumps(ok) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(ValueError, match=rf"{chat}:2: the data holds the mask token"):
        pipeline.sft_rows(str(chat), tok, 64)
    pair_file = tmp_path / "pairs.jsonl"
    pair_file.write_text(json.dumps({"prompt": [5, 6], "chosen": [7], "rejected": [8]}) + "\n"
                         + json.dumps({"prompt": [5, 6], "chosen": [7, 3], "rejected": [8]}) + "\n")
    with pytest.raises(ValueError, match=rf"{pair_file}:2: 'chosen' holds the mask id 3"):
        pairs.read(str(pair_file), eos_id=2, vocab_size=64, mask_id=3)


# ------------------------------------------------------ options that mean nothing
CFG = LLaDAConfig.tiny(d_model=32, n_heads=4, n_kv_heads=2, mlp_hidden_size=64, vocab_size=64,
                       embedding_size=64, max_sequence_length=32, mask_token_id=63, eos_token_id=62,
                       pad_token_id=62)


@pytest.mark.parametrize("kw,match", [(dict(steps=0), r"steps=0, expected an integer >= 1"),
                                      (dict(block_length=0), r"block_length=0")])
def test_generate_zero_is_an_error_not_the_default(kw, match):
    with pytest.raises(ValueError, match=match):
        sample(build(CFG), None, [1, 2], gen_length=4, **kw)  # refused before params are touched


def test_lm_eval_model_args_unknown_key_is_an_error_and_batch_size_works(tok):
    kw = dict(model=build(CFG), params={}, tokenizer=tok)
    with pytest.raises(ValueError, match=r"unknown model_args mc_nmu=8; expected some of workdir, .*mc_num"):
        harness.LLaDAEvalHarness(**kw, mc_nmu=8)
    for name in ("steps", "gen_length", "block_length"):  # before any model is loaded (none is given)
        with pytest.raises(ValueError, match=rf"model_args {name}=0: expected an integer >= 1"):
            harness.LLaDAEvalHarness(workdir="/nonexistent", **{name: 0})
    # `lm-eval run` passes model_args as a dict, and its own batch_size/device beside it
    lm = harness.LLaDAEvalHarness.create_from_arg_obj(dict(kw, batch_size=8, mc_num=16),
                                                      {"batch_size": 1, "device": "cpu", "max_batch_size": None})
    assert (lm.batch_size, lm.mc_num) == (8, 16)
    lm = harness.LLaDAEvalHarness.create_from_arg_obj(dict(kw, mc_num=4), {"batch_size": 2, "device": None})
    assert lm.batch_size == 2


# ------------------------------------------------------ config errors, early and named
@pytest.mark.parametrize("over,devices,match", [
    ({"train.steps": -5}, 1, r"config.train.steps=-5: expected an integer >= 1"),
    ({"train.steps": 0}, 1, r"config.train.steps=0"),
    ({"optim.lr": float("nan")}, 1, r"config.optim.lr=nan: expected a finite number"),
    ({"optim.lr": 0.0}, 1, r"^config.optim.lr=0.0: expected > 0$"),
    # a shorter run names the one field that no longer fits
    ({"train.steps": 1, "optim.decay_steps": 2}, 1, r"^config.optim.decay_steps=2: expected 0..config.train.steps=1"),
    ({"mesh.tensor": 3, "mesh.data": 1}, 3, r"config.mesh.tensor=3: expected a divisor of config.model.n_heads=4"),
])
def test_config_errors_name_the_field_before_anything_runs(over, devices, match):
    with pytest.raises(ValueError, match=match):
        rules.train_config(tiny_config(**over), devices)


def test_a_lora_workdir_as_init_from_is_refused_by_the_validator(tmp_path):
    lora_wd = tmp_path / "lora"
    lora_wd.mkdir()
    workdir_lib.write_run_info(str(lora_wd), "train", model={}, lora_base={"workdir": "/b", "step": 0})
    with pytest.raises(ValueError, match=rf"config.train.init_from='{lora_wd}' is itself a LoRA run"):
        rules.train_run(tiny_config(**{"train.init_from": str(lora_wd)}), 1)
    rl_config = tiny_config(**{"data.kind": "sft"})
    rl_config.rl.update(init_from=str(lora_wd))
    with pytest.raises(ValueError, match=rf"config.rl.init_from='{lora_wd}' is itself a LoRA run"):
        rules_rl.rl_config(rl_config, 1)


def test_an_eval_folder_made_with_another_tokenizer_is_refused_before_compiling(tmp_path, tok):
    (tmp_path / "a.txt").write_text("abc def\n" * 40)
    other = make_tokenizer(tmp_path / "other.json", extra="xyz")  # another vocabulary
    prepare.prepare(str(tmp_path / "a.txt"), str(tmp_path / "train"), tokenizer=tok.path, workers=1, progress=False)
    prepare.prepare(str(tmp_path / "a.txt"), str(tmp_path / "eval"), tokenizer=other, workers=1, progress=False)
    config = tiny_config(**{"data.source": "prepared", "data.path": str(tmp_path / "train"),
                            "data.eval_path": str(tmp_path / "eval"), "train.eval_every": 2, "data.seq_len": 8})
    with pytest.raises(ValueError, match=r"config.data.eval_path=.*eval.* was tokenized with another tokenizer"):
        inputs.iterators(config, tok, process_index=0, process_count=1)
