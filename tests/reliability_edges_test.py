"""Nothing lost, nothing silent, round two (issue 25): workdirs, resumes, LoRA bases,
exports and imports. Each rule is tested where it is enforced, without compiling a model
where the rule does not need one."""

import hashlib
import json
import os
import pathlib
import shutil
import socket
import struct

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from llada_jax.checkpoint import load, manager, repoint, workdir as workdir_lib
from llada_jax.interop import export, import_hf, safetensors_io
from llada_jax.training import loop

ROOT = pathlib.Path(__file__).parent.parent
TINY_HF = ROOT / "tests" / "data" / "llada-tiny"


def tree_hash(path) -> str:
    h = hashlib.sha256()
    for f in sorted(pathlib.Path(path).rglob("*")):
        if f.is_file():
            h.update(str(f.relative_to(path)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    wd = tmp_path_factory.mktemp("imported") / "wd"
    import_hf.main([f"--src={TINY_HF}", f"--workdir={wd}"])
    return wd


# ------------------------------------------------------------------ workdirs (Lost)
def test_a_foreign_run_folder_is_refused(tmp_path):
    foreign = tmp_path / "other_tool"
    (foreign / "checkpoints" / "100").mkdir(parents=True)
    (foreign / "checkpoints" / "100" / "model.pt").write_bytes(b"weights")
    (foreign / "metrics.jsonl").write_text('{"step": 100}\n')
    before = tree_hash(foreign)
    with pytest.raises(workdir_lib.WorkdirError, match="not a llada_jax workdir.*checkpoints/ with checkpoints"):
        workdir_lib.claim(str(foreign), "train")
    (foreign / "checkpoints" / "100" / "model.pt").unlink()
    (foreign / "checkpoints" / "100").rmdir()
    with pytest.raises(workdir_lib.WorkdirError, match="metrics.jsonl"):
        workdir_lib.claim(str(foreign), "train")
    assert tree_hash(foreign) != before and (foreign / "metrics.jsonl").read_text() == '{"step": 100}\n'
    killed = tmp_path / "ours"  # killed while training its tokenizer: still ours to resume
    (killed / "checkpoints").mkdir(parents=True)
    (killed / "tokenizer.model").write_bytes(b"x")
    assert workdir_lib.claim(str(killed), "train") is None


def test_a_run_json_that_is_not_an_object_is_named(tmp_path):
    (tmp_path / "run.json").write_text("[1, 2]")
    with pytest.raises(workdir_lib.WorkdirError, match=r"run.json: expected a JSON object .*got list"):
        workdir_lib.read_run_info(str(tmp_path))


# ---------------------------------------------------------------- resume (Silent)
def _info(**over):
    info = {"kind": "train", "model": {"d_model": 32, "rope_theta": 10000.0, "attention": "dense"},
            "config": {"lora": {"rank": 4, "alpha": 16.0, "targets": "all"},
                       "rl": {"algorithm": "grpo", "init_from": "/sft", "num_generations": 8}},
            "rl": "grpo", "tokenizer_sha256": "a" * 64}
    for key, value in over.items():
        section, field = key.split(".")
        if section == "tokenizer":
            info["tokenizer_sha256"] = value
        elif section == "model":
            info["model"] = dict(info["model"], **{field: value})
        else:
            info["config"] = dict(info["config"], **{section: dict(info["config"][section], **{field: value})})
    return info


@pytest.mark.parametrize("field,value", [
    ("model.rope_theta", 500000.0), ("lora.rank", 8), ("lora.alpha", 32.0), ("lora.targets", "q_proj"),
    ("rl.init_from", "/other_sft"), ("rl.num_generations", 4), ("tokenizer.sha256", "b" * 64)])
def test_a_resume_that_changes_what_a_checkpoint_means_is_refused(field, value):
    name = field if not field.startswith("tokenizer") else "tokenizer"
    with pytest.raises(workdir_lib.WorkdirError, match=rf"resuming step 6 .*{name} .* -> .*--allow_change={name}"):
        workdir_lib.check_resume("wd", _info(), _info(**{field: value}), 6)
    [change] = workdir_lib.check_resume("wd", _info(), _info(**{field: value}), 6, allow=[name])
    assert change["step"] == 6 and change["field"] == name
    # the compute layout is not a meaning: no error
    assert workdir_lib.check_resume("wd", _info(), _info(**{"model.attention": "chunked"}), 6) == []


def test_moe_fields_are_meanings_but_its_dispatch_and_loss_weights_are_not():
    def info(**moe):
        return {"model": {"d_model": 32, "moe": dict({"num_experts": 4, "dispatch": "ragged",
                                                      "load_balance_weight": 0.01}, **moe)}}
    assert workdir_lib.check_resume("wd", info(), info(dispatch="dense", load_balance_weight=0.1), 3) == []
    with pytest.raises(workdir_lib.WorkdirError, match=r"model.moe.num_experts 4 -> 8"):
        workdir_lib.check_resume("wd", info(), info(num_experts=8), 3)


def test_an_allowed_change_is_recorded_in_run_json_keeping_the_history(tmp_path, monkeypatch):
    saved = _info(**{"model.rope_theta": 10000.0})
    saved["changes"] = [{"step": 2, "field": "lora.alpha", "old": 8.0, "new": 16.0}]
    with pytest.raises(ValueError, match="--allow_change=model.rope_thta: not a setting"):
        loop.save_run_info(str(tmp_path), saved, _info(), 6, ["model.rope_thta"])
    loop.save_run_info(str(tmp_path), saved, _info(**{"model.rope_theta": 1e6}), 6, ["model.rope_theta"])
    info = json.loads((tmp_path / "run.json").read_text())
    assert info["model"]["rope_theta"] == 1e6
    assert info["changes"] == saved["changes"] + [{"step": 6, "field": "model.rope_theta", "old": 10000.0,
                                                    "new": 1e6}]


# ------------------------------------------------------------ tokenizer fingerprint
def test_a_run_tokenizer_re_made_under_the_same_path_is_refused_wherever_read(imported, tmp_path):
    wd = tmp_path / "wd"
    tok = tmp_path / "tokenizer.json"
    tok.write_text('{"original": true}')
    shutil.copytree(imported, wd)
    info = workdir_lib.read_run_info(str(wd))
    kind = info.pop("kind")
    workdir_lib.write_run_info(str(wd), kind, **dict(info, tokenizer=str(tok), tokenizer_sha256=None))
    info = workdir_lib.read_run_info(str(wd))
    info.pop("tokenizer_sha256")
    workdir_lib.write_run_info(str(wd), kind, **{k: v for k, v in info.items() if k != "kind"})
    assert workdir_lib.tokenizer_path(workdir_lib.read_run_info(str(wd)), str(wd)) == str(tok)
    tok.write_text('{"re-made": true}')
    with pytest.raises(workdir_lib.WorkdirError, match=r"tokenizer .*tokenizer.json was changed since the run"):
        load.load_workdir(str(wd))  # sampling, evaluation
    with pytest.raises(SystemExit, match=r"error: .*was changed since the run"):
        export.main([f"--workdir={wd}", f"--out={tmp_path / 'hf'}"])
    assert not (tmp_path / "hf").exists()


# ---------------------------------------------------------------- LoRA base (Lost)
def test_a_pinned_base_step_survives_the_base_training_on(tmp_path, capsys):
    wd = tmp_path / "base"
    wd.mkdir()
    workdir_lib.write_run_info(str(wd), "train", model={})
    ck = manager.Checkpointer(manager.checkpoint_dir(str(wd)), every=1, keep=2, async_save=False)
    state = {"params": {"w": jnp.zeros(2)}, "step": jnp.zeros((), jnp.int32), "opt_state": {}, "rng": jnp.zeros(2)}
    abstract = {"w": jax.ShapeDtypeStruct((2,), jnp.float32)}
    for step in range(1, 7):
        ck.save(step, state, {})
        if step == 2:  # a LoRA run starts from the base's latest step: it pins it and says so
            ck.wait()
            ref, _ = load.lora_base(str(tmp_path / "lora"), str(wd), abstract, resuming=False)
            assert ref == {"workdir": str(wd), "step": 2} and "pinned: " in capsys.readouterr().out
    ck.wait()
    assert ck.all_steps() == [2, 5, 6]  # keep=2 plus the pinned step
    ck.close()
    assert workdir_lib.pinned_steps(str(wd)) == {2}
    # a moved or missing base step: the error names the repoint command
    with pytest.raises(ValueError, match=r"no longer holds step 3 .*llada_jax.checkpoint.repoint --workdir=L"):
        load.load_base(str(wd), abstract, 3, "L")


def test_a_lora_run_is_repointed_at_its_moved_base(imported, tmp_path, capsys):
    base = tmp_path / "moved_base"
    shutil.copytree(imported, base)
    lora_wd = tmp_path / "lora"
    lora_wd.mkdir()
    model = dict(workdir_lib.read_run_info(str(imported))["model"],
                 lora={"rank": 2, "alpha": 4.0, "targets": ["q_proj", "v_proj"]})
    workdir_lib.write_run_info(str(lora_wd), "train", model=model, config={},
                               lora_base={"workdir": str(tmp_path / "gone"), "step": 0})
    with pytest.raises(SystemExit, match=r"error: --base=.* holds steps \[0\], not step 5"):
        repoint.main([f"--workdir={lora_wd}", f"--base={base}", "--step=5"])
    repoint.main([f"--workdir={lora_wd}", f"--base={base}"])
    info = workdir_lib.read_run_info(str(lora_wd))
    assert info["lora_base"] == {"workdir": str(base), "step": 0}
    assert info["changes"][-1]["old"] == {"workdir": str(tmp_path / "gone"), "step": 0}
    other = json.loads(json.dumps(model))
    other["d_model"] *= 2  # a base of another shape is refused from its metadata
    workdir_lib.write_run_info(str(lora_wd), "train", model=other, config={}, lora_base=info["lora_base"])
    with pytest.raises(SystemExit, match=r"error: .*does not match"):
        repoint.main([f"--workdir={lora_wd}", f"--base={base}"])
    with pytest.raises(ValueError, match=r"init_from=.*is itself a LoRA run"):
        load.check_not_lora(str(lora_wd))


# ------------------------------------------------------------------ export (Lost)
def test_the_export_target_must_be_new_empty_or_an_earlier_export(imported, tmp_path):
    home = tmp_path / "home"
    shutil.copytree(imported, home / "wd")
    (home / "notes").mkdir()
    (home / "notes" / "thesis.tex").write_text("years of work")
    before = tree_hash(home)
    for out, match in [(home, "holds what an export does not write .*notes/.*wd/"),
                       (home / "notes", r"thesis.tex"), (home / "wd" / "hf", "lies inside the llada_jax workdir"),
                       (home / "wd", "is a llada_jax workdir")]:
        for overwrite in (False, True):
            with pytest.raises(ValueError, match=match):
                export.check_target(str(out), overwrite)
    assert tree_hash(home) == before
    earlier = tmp_path / "hf"
    earlier.mkdir()
    for f in ("config.json", "model-00001-of-00002.safetensors", "model.safetensors.index.json",
              "tokenizer.json", "modeling_llada.py"):
        (earlier / f).write_text("{}")
    export.check_target(str(earlier), True)
    with pytest.raises(ValueError, match="is not empty .*--overwrite"):
        export.check_target(str(earlier), False)


def test_a_killed_export_is_cleaned_by_the_next_one(tmp_path, capsys):
    out, host = tmp_path / "hf", socket.gethostname()
    dead = 2**22 + 12345  # above the default pid_max: no such process
    (tmp_path / f".hf.tmp-{host}-{dead}").mkdir()
    (tmp_path / f".hf.tmp-{host}-{dead}" / "model.safetensors").write_bytes(b"half")
    (tmp_path / f".hf.old-{host}-{dead}").mkdir()
    (tmp_path / f".hf.old-{host}-{dead}" / "config.json").write_text("{}")
    live = tmp_path / f".hf.tmp-{host}-{os.getpid()}"  # a running export's: left alone
    live.mkdir()
    remote = tmp_path / ".hf.tmp-other-host-7"  # another host's: reported, left alone
    remote.mkdir()
    with pytest.raises(ValueError, match="is not empty"):
        export.check_target(str(out), False)  # the set-aside earlier export was put back
    assert (out / "config.json").exists() and live.exists()
    assert sorted(os.listdir(tmp_path)) == sorted(["hf", live.name, remote.name])
    printed = capsys.readouterr().out
    assert "left by a killed export" in printed and f"{remote} was left by an export on host other-host" in printed


def test_export_of_a_read_only_workdir_takes_no_lock_and_bytes_shard_size(imported, tmp_path, monkeypatch):
    def no_write(*a, **k):
        raise PermissionError(13, "Permission denied", str(imported))
    monkeypatch.setattr(workdir_lib, "lock", no_write)  # a read-only workdir: taking a lock would fail
    before = tree_hash(imported)
    assert export.hf_parse_size("300000") == 300000
    export.main([f"--workdir={imported}", f"--out={tmp_path / 'hf'}", "--max_shard_size=300000", "--dtype=float32"])
    assert (tmp_path / "hf" / "model.safetensors.index.json").exists() and tree_hash(imported) == before


# ----------------------------------------------------------------- import (Silent)
@pytest.mark.parametrize("field,value", [("rope_scaling", {"type": "linear", "factor": 2.0}),
                                         ("sliding_window", 4096), ("use_sliding_window", True),
                                         ("partial_rotary_factor", 0.5), ("model_type", "qwen9")])
def test_import_refuses_config_fields_it_does_not_implement(tmp_path, field, value):
    src = tmp_path / "src"
    shutil.copytree(TINY_HF, src)
    cfg = json.loads((src / "config.json").read_text())
    cfg[field] = value
    (src / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(SystemExit, match=rf"error: .*config.json: {field}="):
        import_hf.main([f"--src={src}", f"--workdir={tmp_path / 'wd'}"])
    assert not (tmp_path / "wd").exists()


def _write_st(path, tensors):
    header, blobs, off = {}, [], 0
    for name, (code, arr) in tensors.items():
        raw = arr.tobytes()
        header[name] = {"dtype": code, "shape": list(arr.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def test_import_refuses_integer_tensors_and_reads_a_hub_cache_snapshot(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(TINY_HF, src)
    reader = safetensors_io.DirReader(str(TINY_HF))
    name = reader.names[0]
    tensors = {n: ("F32", reader.read(n).astype(np.float32)) for n in reader.names}
    tensors[name] = ("I8", np.zeros(reader.shape(name), np.int8))
    _write_st(src / "model.safetensors", tensors)
    with pytest.raises(SystemExit, match=rf"error: .*tensor '{name}' has dtype int8, expected a floating point"):
        import_hf.main([f"--src={src}", f"--workdir={tmp_path / 'wd'}"])
    # the hub cache: snapshots/<rev>/ holds symlinks to ../../blobs/<sha>
    repo = tmp_path / "models--x--tiny"
    (repo / "blobs").mkdir(parents=True)
    snap = repo / "snapshots" / "abc"
    snap.mkdir(parents=True)
    names = reader.names
    half = {n: ("F32", reader.read(n).astype(np.float32)) for n in names[: len(names) // 2]}
    rest = {n: ("F32", reader.read(n).astype(np.float32)) for n in names[len(names) // 2:]}
    for i, part in enumerate((half, rest)):
        _write_st(repo / "blobs" / f"sha{i}", part)
        os.symlink(f"../../blobs/sha{i}", snap / f"model-0000{i + 1}-of-00002.safetensors")
    (snap / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
        n: f"model-0000{1 + (n in rest)}-of-00002.safetensors" for n in names}}))
    os.symlink(TINY_HF / "config.json", snap / "config.json")
    _, got = import_hf.load_pretrained(str(snap), dtype="float32")
    _, want = import_hf.load_pretrained(str(TINY_HF), dtype="float32")
    np.testing.assert_array_equal(np.asarray(got["wte"]), np.asarray(want["wte"]))
