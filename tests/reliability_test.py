"""Nothing lost: every case of issue 11 where an ordinary action destroyed work or gave a
silently wrong result. Each data-loss case asserts the error names the field and the
workdir's files are byte-identical before and after."""

import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl import flags

from llada_jax import cli
from llada_jax.checkpoint import manager
from llada_jax.objectives import likelihood
from llada_jax.interop import export, hf, import_hf
from llada_jax.training import loop
from llada_jax.sampling import sampler
from llada_jax.checkpoint import workdir as workdir_lib
from llada_jax.model import LLaDA, LLaDAConfig

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from train_helper import tiny_config  # noqa: E402

ROOT = pathlib.Path(__file__).parent.parent
TINY_HF = ROOT / "tests" / "data" / "llada-tiny"


def tree_hash(path) -> str:
    """sha256 over every file's relative path and bytes under `path` (the lock excluded)."""
    h = hashlib.sha256()
    for f in sorted(pathlib.Path(path).rglob("*")):
        if f.is_file() and f.name != workdir_lib.LOCK:
            h.update(str(f.relative_to(path)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


# Training runs here use one device: checkpointing arrays replicated over 8 compiles a slice
# per leaf, and nothing here is about the mesh.
ONE = jax.devices()[:1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny training workdir with checkpoints at steps 2 and 4."""
    wd = tmp_path_factory.mktemp("trained") / "wd"
    loop.train_and_evaluate(tiny_config(**{"train.steps": 4}), str(wd), devices=ONE)
    return wd


@pytest.fixture
def train_wd(trained, tmp_path):
    wd = tmp_path / "wd"
    shutil.copytree(trained, wd)
    return wd


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    wd = tmp_path_factory.mktemp("imported") / "wd"
    import_hf.main([f"--src={TINY_HF}", f"--workdir={wd}"])
    return wd


# ----------------------------------------------------------------- 1. resume mismatch
@pytest.mark.parametrize("override,named", [
    ({"model.d_model": 64}, "model.d_model 32 -> 64"),
    ({"optim.clip_norm": 0.0}, "optim.clip_norm 1.0 -> 0.0"),
])
def test_resume_with_another_shape_or_optimizer_stops_before_writing(train_wd, override, named):
    before = tree_hash(train_wd)
    with pytest.raises(ValueError, match="does not match") as e:
        loop.train_and_evaluate(tiny_config(**{"train.steps": 6, **override}), str(train_wd))
    msg = str(e.value)
    assert named in msg and "new --workdir" in msg and "init_from" in msg and "step 4" in msg
    assert tree_hash(train_wd) == before
    assert not (train_wd / workdir_lib.LOCK).exists()


def test_resume_with_another_rope_base_is_refused_naming_it(train_wd):
    """The wiring of workdir.check_resume in the loop (its rule: tests/reliability_edges_test.py)."""
    before = tree_hash(train_wd)
    with pytest.raises(workdir_lib.WorkdirError, match=r"model.rope_theta 10000.0 -> 20000.0.*--allow_change="):
        loop.train_and_evaluate(tiny_config(**{"train.steps": 6, "model.rope_theta": 20000.0}), str(train_wd),
                                devices=ONE)
    assert tree_hash(train_wd) == before and not (train_wd / workdir_lib.LOCK).exists()


# ---------------------------------------------------- 2. import and training workdirs
def test_training_into_an_import_workdir_is_refused(imported, tmp_path):
    wd = tmp_path / "imp"
    shutil.copytree(imported, wd)
    before = tree_hash(wd)
    with pytest.raises(workdir_lib.WorkdirError, match=rf"init_from={wd}"):
        loop.train_and_evaluate(tiny_config(), str(wd))
    assert tree_hash(wd) == before


def test_import_into_a_training_workdir_or_a_foreign_dir_is_refused(train_wd, tmp_path, capsys):
    before = tree_hash(train_wd)
    with pytest.raises(SystemExit, match="error: .*already holds a training run.*init_from"):
        import_hf.main([f"--src={TINY_HF}", f"--workdir={train_wd}"])
    assert tree_hash(train_wd) == before
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("years of work")
    with pytest.raises(SystemExit, match="error: .*not empty"):
        import_hf.main([f"--src={TINY_HF}", f"--workdir={foreign}"])
    with pytest.raises(workdir_lib.WorkdirError, match="not a llada_jax workdir"):
        loop.train_and_evaluate(tiny_config(), str(foreign))
    assert sorted(os.listdir(foreign)) == ["thesis.tex"]


def test_init_from_an_import_starts_training_from_its_params(imported, tmp_path):
    info = manager.run_info(str(imported))
    assert info["kind"] == "import"
    over = {f"model.{k}": info["model"][k] for k in ("d_model", "n_heads", "n_kv_heads", "n_layers",
                                                      "mlp_hidden_size", "vocab_size", "embedding_size",
                                                      "rope_theta", "mask_token_id", "eos_token_id",
                                                      "pad_token_id")}
    over.update({"train.steps": 1, "train.init_from": str(imported), "checkpoint.every": 0,
                 "optim.decay_steps": 0, "optim.warmup_steps": 0})
    state, _ = loop.train_and_evaluate(tiny_config(**over), str(tmp_path / "sft"), devices=ONE)
    assert int(state["step"]) == 1
    assert manager.run_info(str(tmp_path / "sft"))["kind"] == "train"


# --------------------------------------------------------------------------- 3. lock
def test_a_second_run_fails_at_once_naming_the_holder(train_wd):
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        holder = {"pid": other.pid, "host": __import__("socket").gethostname(), "purpose": "train", "since": "now"}
        (train_wd / workdir_lib.LOCK).write_text(json.dumps(holder))
        before = tree_hash(train_wd)
        with pytest.raises(workdir_lib.WorkdirError, match=rf"in use: train run pid {other.pid} on host"):
            loop.train_and_evaluate(tiny_config(**{"train.steps": 6}), str(train_wd))
        with pytest.raises(SystemExit, match=rf"error: .*in use: train run pid {other.pid}"):
            export.main([f"--workdir={train_wd}", f"--out={train_wd.parent / 'hf'}"])
        assert tree_hash(train_wd) == before and not (train_wd.parent / "hf").exists()
    finally:
        other.kill()
        other.wait()
    # the holder is dead now: its lock is stale and taken over
    with workdir_lib.lock(str(train_wd), "export"):
        assert json.loads((train_wd / workdir_lib.LOCK).read_text())["pid"] == os.getpid()
    assert not (train_wd / workdir_lib.LOCK).exists()


# ------------------------------------------------------------------------ 4. export
def test_export_never_mixes_with_an_earlier_export(imported, tmp_path):
    out = tmp_path / "hf"
    export.main([f"--workdir={imported}", f"--out={out}", "--dtype=float32", "--max_shard_size=100KB"])
    sharded = sorted(os.listdir(out))
    assert "model.safetensors.index.json" in sharded
    before = tree_hash(out)
    with pytest.raises(SystemExit, match="error: --out=.* is not empty .*--overwrite"):
        export.main([f"--workdir={imported}", f"--out={out}", "--dtype=float32"])
    assert tree_hash(out) == before
    export.main([f"--workdir={imported}", f"--out={out}", "--dtype=float32", "--overwrite"])
    files = sorted(os.listdir(out))
    assert "model.safetensors" in files and not any(f.startswith("model-") or "index" in f for f in files)
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".hf.")]  # no temporary left
    # our loader and the torch loader read the same (new, whole) weights
    config, params = hf.load_pretrained(str(out))
    _, want = hf.load_pretrained(str(TINY_HF), dtype="float32")
    np.testing.assert_array_equal(np.asarray(params["wte"]), np.asarray(want["wte"]))
    from llada_jax.interop import torch_model
    t = torch_model.LLaDATorch.from_pretrained(str(out))
    np.testing.assert_array_equal(t.state_dict()["model.transformer.wte.weight"].float().numpy(),
                                  np.asarray(want["wte"]))


def test_export_refuses_int8_and_a_workdir_as_target(imported, train_wd):
    with pytest.raises(SystemExit) as e:  # one line naming the flag and its values; the exit status is 1
        export.main([f"--workdir={imported}", f"--out={imported.parent / 'x'}", "--dtype=int8"])
    assert e.value.code == "error: --dtype=int8: value should be one of <float32|bfloat16|float16>"
    assert not (imported.parent / "x").exists()
    with pytest.raises(ValueError, match="--dtype='int8': expected one of float32, bfloat16, float16"):
        export.save_pretrained(LLaDAConfig.tiny(), {}, str(imported.parent / "y"), dtype="int8")
    before = tree_hash(train_wd)
    with pytest.raises(SystemExit, match="is a llada_jax workdir"):
        export.main([f"--workdir={imported}", f"--out={train_wd}", "--overwrite"])
    assert tree_hash(train_wd) == before


# 5. non-finite state: tests/checkpoint_test.py::test_nonfinite_loss_stops_and_keeps_last_good_checkpoint


# ------------------------------------------------------ 6. corrupted latest checkpoint
def test_unreadable_latest_is_quarantined_and_saved_again(train_wd):
    for f in (train_wd / "checkpoints" / "4" / "params").rglob("*"):
        if f.is_file():
            f.write_bytes(b"")
    loop.train_and_evaluate(tiny_config(**{"train.steps": 6}), str(train_wd), devices=ONE)
    quarantined = list((train_wd / "quarantine").iterdir())
    assert len(quarantined) == 1 and quarantined[0].name.startswith("4.")
    assert (quarantined[0] / "params").is_dir()  # moved aside, not deleted
    ck = manager.Checkpointer(manager.checkpoint_dir(str(train_wd)), read_only=True)
    assert ck.all_steps() == [2, 4, 6]
    ck.close()


def test_run_json_paths_are_relative_inside_the_workdir(tmp_path):
    wd = tmp_path / "a"
    wd.mkdir()
    (wd / "tokenizer.model").write_bytes(b"x")
    workdir_lib.write_run_info(str(wd), "train", tokenizer=str(wd / "tokenizer.model"), model={})
    assert json.loads((wd / "run.json").read_text())["tokenizer"] == "tokenizer.model"
    shutil.move(str(wd), str(tmp_path / "b"))
    assert manager.run_info(str(tmp_path / "b"))["tokenizer"] == str(tmp_path / "b" / "tokenizer.model")


def test_data_cache_lives_in_the_workdir_not_next_to_the_tokenizer(tmp_path):
    """A run with someone else's tokenizer file writes its tokenized-data cache into its own
    workdir; the tokenizer's directory stays byte-identical."""
    from llada_jax.data import tokenizer

    text = tmp_path / "text.txt"
    text.write_text("".join(f.read_text() for f in sorted(pathlib.Path(json.__file__).parent.glob("*.py"))))
    shared = tmp_path / "shared"
    shared.mkdir()
    trained = tokenizer.train_sentencepiece([str(text)], str(shared / "tok"), 512)
    before = tree_hash(shared)
    wd = tmp_path / "wd"
    loop.train_and_evaluate(tiny_config(**{"data.source": "files", "data.train_files": str(text),
                                           "data.tokenizer": trained.path, "train.steps": 2,
                                           "model.vocab_size": 512, "model.embedding_size": 512}), str(wd), devices=ONE)
    assert tree_hash(shared) == before and not (shared / "data_cache").exists()
    assert any((wd / "data_cache").iterdir())


# ----------------------------------------------------------- generate, log_likelihood
CFG = LLaDAConfig.tiny(d_model=32, n_heads=4, n_kv_heads=2, mlp_hidden_size=64, vocab_size=128,
                       embedding_size=128, max_sequence_length=64, mask_token_id=127, eos_token_id=126,
                       pad_token_id=126)


@pytest.fixture(scope="module")
def small():
    model = LLaDA(CFG)
    return model, jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"]


GOOD = dict(steps=4, gen_length=4, block_length=4)


@pytest.mark.parametrize("kw,match", [
    (dict(eos_id=128), r"eos_id=128, expected an integer <= 127"),
    (dict(eot_id=-1), r"eot_id=-1"),
    (dict(mask_id=126336), r"mask_id=126336"),
    (dict(temperature=float("nan")), r"temperature=nan, expected a finite number"),
    (dict(cfg_scale=float("inf")), r"cfg_scale=inf, expected a finite number"),
    (dict(steps=4.0), r"steps=4.0, expected an integer"),
    (dict(steps=True), r"steps=True, expected an integer"),
    (dict(prompt=np.ones((1, 3), np.float32)), r"prompt.dtype='float32', expected integer token ids"),
    (dict(prompt=np.ones((1, 3), bool)), r"prompt.dtype='bool'"),
    (dict(prompt=np.full((1, 3), 200)), r"prompt token=200, expected ids in \[0, 128\)"),
    (dict(rng=42), r"rng=42, expected a single JAX PRNG key"),
    (dict(rng=jax.random.split(jax.random.key(0), 2)), r"rng=.*expected a single JAX PRNG key"),
])
def test_generate_rejects_bad_arguments_before_compiling(small, kw, match):
    model, params = small
    args = dict(GOOD, prompt=np.ones((1, 3), np.int32))
    args.update(kw)
    before = sampler._reverse_process._cache_size()
    with pytest.raises(ValueError, match=match):
        sampler.generate(model, params, args.pop("prompt"), **args)
    assert sampler._reverse_process._cache_size() == before


def test_generate_takes_special_ids_from_the_config_and_numpy_ints(small):
    model, params = small
    assert sampler.special_ids(model) == (127, 126, 126)
    assert sampler.special_ids(None) == (126336, 126081, 126348)
    out = sampler.generate(model, params, np.ones((1, 3), np.int64), steps=np.int64(4), gen_length=np.int32(4),
                            block_length=np.int64(4), temperature=np.float32(0), logits_eos_inf=True)
    assert np.asarray(out).shape == (1, 7) and 126 not in np.asarray(out)[0, 3:]


@pytest.mark.parametrize("kw,match", [
    (dict(answer=[5, 300]), r"answer token=300, expected ids in \[0, 128\)"),
    (dict(prompt=[[1, 2]]), r"prompt.shape=\(1, 2\), expected 1-D"),
    (dict(mc_num=0), r"mc_num=0, expected an integer >= 1"),
    (dict(batch_size=0), r"batch_size=0, expected an integer >= 1"),
    (dict(cfg_scale=-1.0), r"cfg_scale=-1.0, expected >= 0"), (dict(cfg_scale=float("nan")), r"cfg_scale=nan"),
    (dict(answer=list(range(70))), r"len\(prompt\) \+ len\(answer\)=72, expected <= max_sequence_length=64"),
    (dict(mask_id=126336), r"mask_id=126336"),
    (dict(rng=None), r"rng=None"),
])
def test_log_likelihood_rejects_bad_arguments_before_compiling(small, kw, match):
    model, params = small
    args = dict(prompt=[1, 2], answer=[3, 4], rng=jax.random.key(0), mc_num=4, batch_size=2)
    args.update(kw)
    before = likelihood.mc_nll._cache_size()
    with pytest.raises(ValueError, match=match):
        likelihood.log_likelihood(model, params, args.pop("prompt"), args.pop("answer"), **args)
    assert likelihood.mc_nll._cache_size() == before


def test_log_likelihood_default_mask_id_is_the_models(small):
    model, params = small
    ll = likelihood.log_likelihood(model, params, [1, 2], [3], rng=jax.random.key(0), mc_num=2, batch_size=2)
    explicit = likelihood.log_likelihood(model, params, [1, 2], [3], rng=jax.random.key(0), mc_num=2,
                                        batch_size=2, mask_id=127)
    assert np.isfinite(ll) and ll == explicit


def test_model_apply_rejects_ids_outside_the_vocabulary(small):
    model, params = small
    with pytest.raises(ValueError, match=r"LLaDA.apply: input_ids token=128, expected ids in \[0, 128\)"):
        model.apply({"params": params}, jnp.array([[1, 128]]))
    with pytest.raises(ValueError, match=r"input_ids token=-1"):
        model.apply({"params": params}, np.array([[-1, 3]]))


# --------------------------------------------------------------------------- import_hf
def _copy_hf(tmp_path, config=None):
    src = tmp_path / "src"
    shutil.copytree(TINY_HF, src)
    if config is not None:
        (src / "config.json").write_text(json.dumps(config))
    return src


@pytest.mark.parametrize("field", ["rope_theta", "n_layers", "n_heads"])
def test_import_names_a_missing_config_field(tmp_path, field):
    cfg = json.loads((TINY_HF / "config.json").read_text())
    del cfg[field]
    src = _copy_hf(tmp_path, cfg)
    with pytest.raises(SystemExit, match=rf"error: config.json is missing {field}"):
        import_hf.main([f"--src={src}", f"--workdir={tmp_path / 'wd'}"])
    assert not (tmp_path / "wd" / "checkpoints").exists()


def test_import_names_the_garbage_safetensors_file_and_refuses_outside_shards(tmp_path):
    src = _copy_hf(tmp_path)
    (src / "model.safetensors").write_bytes((16).to_bytes(8, "little") + b"\xff garbage \x00\x01\x02")
    with pytest.raises(SystemExit, match=r"error: .*model.safetensors: not a safetensors file"):
        import_hf.main([f"--src={src}", f"--workdir={tmp_path / 'wd'}"])
    (src / "model.safetensors").unlink()
    (src / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"model.transformer.wte.weight": "../secret.safetensors"}}))
    with pytest.raises(SystemExit, match=r"error: .*weight_map names '../secret.safetensors', outside"):
        import_hf.main([f"--src={src}", f"--workdir={tmp_path / 'wd'}"])


# ---------------------------------------------------------------------- command lines
def test_config_file_is_executed_once(tmp_path):
    counter = tmp_path / "count"
    cfg = tmp_path / "cfg.py"
    cfg.write_text(f"import sys\nsys.path.insert(0, {str(ROOT)!r})\nfrom configs.tiny import get_config as _g\n"
                   f"def get_config():\n    open({str(counter)!r}, 'a').write('x')\n    return _g()\n")
    fv = flags.FlagValues()
    argv = cli.define_config_flag(["prog", f"--config={cfg}", "--config.optim.lr=0.5"], flag_values=fv)
    fv(argv)
    assert fv.config.optim.lr == 0.5 and counter.read_text() == "x"


def _cli(*args, cwd=ROOT):
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=120, cwd=cwd,
                          env=env)


def test_help_lists_the_flags_without_a_config():
    for command, wanted in (("llada_jax.train", ("--config:", "--workdir:", "--allow_change:")),
                            ("llada_jax.plan", ("--config:", "--devices:"))):
        out = _cli(command, "--help")
        assert "error" not in out.stderr and all(w in out.stdout for w in wanted), (command, out.stdout, out.stderr)


def test_command_lines_print_one_error_line(imported, tmp_path):
    foreign = tmp_path / "other_tool"  # another tool's run folder: refused, and left as it was
    (foreign / "checkpoints" / "100").mkdir(parents=True)
    (foreign / "metrics.jsonl").write_text('{"step": 100}\n')
    cases = [
        (("llada_jax.train", "--config=configs/tiny.py", f"--workdir={foreign}"), "not a llada_jax workdir"),
        (("llada_jax.train", "--config=nope.py", f"--workdir={tmp_path / 'a'}"), "--config='nope.py': no such file"),
        (("llada_jax.train", "--config=configs/tiny.py", f"--workdir={imported}"), "init_from="),
        (("llada_jax.generate", f"--workdir={tmp_path / 'none'}", "--prompt_ids=1,2"), "no run.json"),
        (("llada_jax.plan", "--config=configs/tiny.py", "--devices=abc"), "--devices=abc"),
        # a missing held-out file is named before a tokenizer is trained on README.md
        (("llada_jax.train", "--config=configs/tiny.py", f"--workdir={tmp_path / 'b'}", "--config.data.source=files",
          "--config.data.train_files=README.md", "--config.data.eval_files=/nonexistent"),
         "config.data.eval_files='/nonexistent'"),
    ]
    for args, want in cases:
        out = _cli(*args)
        assert out.returncode == 1, (args, out.stderr[-2000:])
        lines = out.stderr.strip().splitlines()
        assert "Traceback" not in out.stderr and lines[-1].startswith("error: ") and want in lines[-1], \
            (args, out.stderr[-2000:])
    assert not (tmp_path / "b").exists()  # refused before the workdir, so before any tokenizer
    assert sorted(p.name for p in foreign.rglob("*")) == ["100", "checkpoints", "metrics.jsonl"]
