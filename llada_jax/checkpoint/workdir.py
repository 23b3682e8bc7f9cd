"""A workdir's ownership, its exclusive lock and its run.json.

A workdir has one owner kind, recorded in run.json: "train" (made by
`python -m llada_jax.train`) or "import" (made by `python -m llada_jax.import_hf`).
Training into an import workdir, or importing into anything but a new (or empty)
directory, is refused: mixing them rotated out the other's checkpoints. A non-empty
directory that holds no run.json and none of our files is refused too.

One process at a time writes a workdir: `lock(workdir, purpose)` creates
`workdir/lock` with O_EXCL (atomic on POSIX and NFSv3+) holding the owner's pid, host
and purpose; a lock left by a dead process on this host is taken over, a live one (or
one from another host, whose pid we cannot check) is an error naming the holder.
Hand-written because a lock file with a readable owner is all this needs (fcntl locks
are not reliable on the network file systems multi-host runs use). In a multi-process
run only process 0 takes it.

run.json paths that lie inside the workdir are stored relative to it, so a moved or
copied workdir keeps working. run.json also holds the sha256 of the tokenizer file
(`tokenizer_sha256`): `tokenizer_path` checks it wherever a run's tokenizer is read, so a
file re-made under the same path is refused instead of decoding (or shipping) wrongly.

Resuming (`check_resume`): every setting that changes what a checkpoint means (MEANING:
the model fields, LoRA rank/alpha/targets, the RL algorithm, reference and group size,
the tokenizer) must equal run.json's, or be named in `--allow_change`; an allowed change
is appended to run.json's `changes` with the step it took effect (history is kept).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import time

KINDS = ("train", "import")
LOCK = "lock"
# Entries a training run creates before its run.json exists (e.g. killed while training
# the tokenizer): a directory holding only these is still ours to resume.
# checkpoints/ only while empty (orbax makes it before the first save, which comes after
# run.json); metrics, tensorboard and quarantine come after run.json, so without one they
# are another tool's (its checkpoints quarantined, its metrics appended to: refused).
_OURS = {"checkpoints", "tokenizer.model", "tokenizer.vocab", "tokenizer.json", "data_cache", LOCK}


class WorkdirError(ValueError):
    """A workdir that this run must not write: owned by another kind, locked, foreign."""


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


def _holder(path: str) -> dict | None:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # half-written by a process that died between create and write


def _held(workdir, path, holder, flag, same_host) -> WorkdirError:
    if not holder:
        return WorkdirError(f"{flag}={workdir!r} is locked by an unreadable {path}; if no other run "
                            f"uses this workdir, delete that file")
    return WorkdirError(
        f"{flag}={workdir!r} is in use: {holder.get('purpose', '?')} run pid {holder.get('pid')} on "
        f"host {holder.get('host')} since {holder.get('since')} holds {path}; wait for it to end, or "
        f"delete that file if the process is gone" + ("" if same_host else " (a process on another "
                                                       "host cannot be checked from here)"))


@contextlib.contextmanager
def lock(workdir: str, purpose: str, *, enabled: bool = True, flag: str = "--workdir"):
    """Hold `workdir/lock` for the duration of the block (WorkdirError if held); `flag`
    names the setting that gave `workdir` in errors."""
    if not enabled:
        yield
        return
    path = os.path.join(workdir, LOCK)
    me = {"pid": os.getpid(), "host": socket.gethostname(), "purpose": purpose,
          "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _holder(path)
            if holder is None:
                continue  # released meanwhile
            same_host = holder.get("host") == me["host"]
            if holder and same_host and isinstance(holder.get("pid"), int) and not pid_alive(holder["pid"]):
                os.replace(path, path + f".stale{os.getpid()}")  # atomic: one taker wins
                os.remove(path + f".stale{os.getpid()}")
                continue
            raise _held(workdir, path, holder, flag, same_host) from None
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        break
    else:
        raise WorkdirError(f"{flag}={workdir!r}: could not take {path} (it keeps changing hands)")
    try:
        yield
    finally:
        if (_holder(path) or {}).get("pid") == me["pid"]:
            os.remove(path)


def check_unlocked(workdir: str) -> None:
    """WorkdirError when a live process holds `workdir/lock` (as `lock` would raise), without
    writing anything: a reader (export, sampling) of a read-only workdir needs no lock."""
    path = os.path.join(workdir, LOCK)
    holder = _holder(path)
    same_host = (holder or {}).get("host") == socket.gethostname()
    if holder and isinstance(holder.get("pid"), int) and (not same_host or pid_alive(holder["pid"])):
        raise _held(workdir, path, holder, "--workdir", same_host)


def info_path(workdir: str) -> str:
    return os.path.join(workdir, "run.json")


def kind_of(info: dict) -> str:
    """The owner kind of a parsed run.json (older files: import if it names its source)."""
    return info.get("kind") or ("import" if info.get("imported_from") else "train")


def claim(workdir: str, kind: str) -> dict | None:
    """Check that a run of `kind` may write `workdir`; returns its run.json (None: new).

    WorkdirError when the workdir belongs to the other kind or is not ours at all.
    """
    assert kind in KINDS, kind
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise WorkdirError(f"--workdir={workdir!r} is a file, expected a directory")
    entries = set(os.listdir(workdir)) if os.path.isdir(workdir) else set()
    if os.path.isfile(info_path(workdir)):
        info = read_run_info(workdir)
        owner = kind_of(info)
        if owner == kind == "train":
            return info
        if owner == "import" and kind == "train":
            raise WorkdirError(
                f"--workdir={workdir!r} holds weights imported by llada_jax.import_hf; training there would "
                f"replace them. Train into a new --workdir and start from the import with "
                f"--config.train.init_from={workdir}")
        raise WorkdirError(
            f"--workdir={workdir!r} already holds a {'training run' if owner == 'train' else 'previous import'}; "
            f"import into a new, empty --workdir (then train from it with --config.train.init_from=NEW_DIR)")
    if kind == "import" and entries - {LOCK}:
        raise WorkdirError(f"--workdir={workdir!r} is not empty ({', '.join(sorted(entries)[:5])}); "
                           f"import into a new, empty directory")
    if "checkpoints" in entries and os.listdir(os.path.join(workdir, "checkpoints")):
        entries = entries | {"checkpoints/ with checkpoints"}
    if entries - _OURS:
        raise WorkdirError(f"--workdir={workdir!r} is a non-empty directory that is not a llada_jax workdir "
                           f"(no run.json; holds {', '.join(sorted(entries - _OURS)[:5])}); choose a new "
                           f"or empty --workdir")
    return None


def _relative(workdir: str, path):
    if not path:
        return path
    absolute, root = os.path.abspath(path), os.path.abspath(workdir)
    return os.path.relpath(absolute, root) if os.path.commonpath([absolute, root]) == root else absolute


def file_sha256(path: str) -> str:
    """The sha256 of a file's bytes (hex): run.json's tokenizer_sha256."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def write_run_info(workdir: str, kind: str, **fields):
    """Write run.json atomically: {"kind", **fields}; a "tokenizer" path inside the
    workdir is stored relative to it."""
    info = {"kind": kind, **fields}
    if info.get("tokenizer"):
        if "tokenizer_sha256" not in info:  # not setdefault: the file is read only when needed
            info["tokenizer_sha256"] = file_sha256(info["tokenizer"])
        info["tokenizer"] = _relative(workdir, info["tokenizer"])
    tmp = info_path(workdir) + f".tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(info, f, indent=1, sort_keys=True)
    os.replace(tmp, info_path(workdir))


def read_run_info(workdir: str) -> dict:
    """The parsed run.json of a training or import workdir, paths made absolute."""
    path = info_path(workdir)
    if not os.path.isfile(path):
        raise WorkdirError(f"--workdir={workdir!r}: no run.json; expected a training or import workdir")
    try:
        with open(path) as f:
            info = json.load(f)
    except ValueError as e:
        raise WorkdirError(f"{path}: not valid JSON ({e}); this workdir's run.json is damaged") from None
    if not isinstance(info, dict) or not isinstance(info.get("model", {}), dict):
        raise WorkdirError(f"{path}: expected a JSON object with a 'model' object, got {type(info).__name__}; "
                           f"this workdir's run.json is damaged or not ours")
    if info.get("tokenizer") and not os.path.isabs(info["tokenizer"]):
        info["tokenizer"] = os.path.join(os.path.abspath(workdir), info["tokenizer"])
    return info


def config_diff(saved: dict | None, current: dict, sections=("model", "optim", "mesh", "data")) -> list[str]:
    """"section.field old -> new" for every field of `sections` that differs."""
    out = []
    for section in sections:
        old, new = (saved or {}).get(section) or {}, current.get(section) or {}
        for field in sorted(set(old) | set(new)):
            if old.get(field) != new.get(field):
                out.append(f"{section}.{field} {old.get(field)!r} -> {new.get(field)!r}")
    return out


def tokenizer_path(info: dict, workdir: str) -> str | None:
    """The tokenizer file run.json `info` names (None: none), checked against its recorded
    sha256: WorkdirError for a file that is gone or was re-made with other content."""
    path = info.get("tokenizer")
    if not path:
        return None
    if not os.path.isfile(path):
        raise WorkdirError(f"--workdir={workdir!r}: its tokenizer {path} (run.json) is missing; expected the "
                           f"file the run was made with")
    want = info.get("tokenizer_sha256")
    if want and file_sha256(path) != want:
        raise WorkdirError(f"--workdir={workdir!r}: its tokenizer {path} was changed since the run (sha256 "
                           f"{file_sha256(path)[:12]}, run.json records {want[:12]}); decoding or exporting with it "
                           f"would be wrong: put the original file back")
    return path


# Settings that change what a checkpoint's arrays mean (resumed with another value they
# would be read wrongly): the model fields but its compute layout, and these config fields.
# The MoE's dispatch is a layout too, its loss weights the training's (like the optimizer's); the
# LoRA fields are compared from config.lora (MEANING_CONFIG).
_LAYOUT = {"dtype", "param_dtype", "scan_layers", "scan_unroll", "remat_policy", "attention", "mlp_chunk",
           "moe.dispatch", "moe.load_balance_weight", "moe.z_loss_weight"}
MEANING_CONFIG = {"lora": ("rank", "alpha", "targets"), "rl": ("algorithm", "init_from", "num_generations")}


def meaning(info: dict) -> dict:
    """{field: value} of the MEANING settings of a run.json-shaped dict (absent: not recorded)."""
    model = {}
    for k, v in (info.get("model") or {}).items():  # nested sections (moe) field by field
        model.update({f"{k}.{f}": x for f, x in v.items()} if isinstance(v, dict) else {k: v})
    out = {f"model.{k}": v for k, v in model.items() if k not in _LAYOUT and k.split(".")[0] != "lora"}
    config = info.get("config") or {}
    for section, fields in MEANING_CONFIG.items():
        if section == "rl" and "rl" not in info:
            continue  # the rl section means nothing to a `llada_jax.train` run
        for f in fields:
            if f in (config.get(section) or {}):
                v = config[section][f]
                out[f"{section}.{f}"] = os.path.abspath(v) if f == "init_from" and v else v
    if info.get("tokenizer_sha256"):
        out["tokenizer"] = info["tokenizer_sha256"]
    return out


def check_resume(workdir: str, saved: dict, current: dict, step: int, allow=()) -> list[dict]:
    """Compare the MEANING settings of run.json `saved` with this run's (`current`, the
    run.json it would write). WorkdirError naming each changed field unless `allow` names
    it (ValueError for a name that is not such a field). Returns the record of the
    allowed changes: [{"step", "field", "old", "new"}], to append to run.json's changes."""
    old, new = meaning(saved), meaning(current)
    unknown = sorted(set(allow) - set(old) - set(new) - {"tokenizer"})
    if unknown:
        raise ValueError(f"--allow_change={','.join(unknown)}: not a setting checked on resume; expected "
                         f"some of {', '.join(sorted(set(old) | set(new)))}")
    no_lora = not old.get("lora.rank") and not new.get("lora.rank")
    changed = [f for f in sorted(set(old) & set(new)) if old[f] != new[f]
               and not (no_lora and f in ("lora.alpha", "lora.targets"))]
    short = lambda f, v: v[:12] if f == "tokenizer" else v  # noqa: E731
    refused = [f"{f} {short(f, old[f])!r} -> {short(f, new[f])!r}" for f in changed if f not in allow]
    if refused:
        raise WorkdirError(
            f"--workdir={workdir!r}: resuming step {step} with settings that change what its checkpoints mean "
            f"(run.json -> now): {'; '.join(refused)}. Nothing was written. Rerun with the old values, start a new "
            f"--workdir, or pass --allow_change={','.join(f.split()[0] for f in refused)} to make the change "
            f"(recorded in run.json with this step)")
    return [{"step": step, "field": f, "old": old[f], "new": new[f]} for f in changed]


# A LoRA run's base step, pinned in the base workdir: BASE/pins/<id>.json. The base's
# checkpoint retention keeps every pinned step (checkpoint.manager), so training the base
# on never prunes what a LoRA run references; deleting the pin file releases it.
PINS = "pins"


def pin(base_workdir: str, step: int, lora_workdir: str) -> str | None:
    """Pin `step` of training workdir `base_workdir` for `lora_workdir`; returns the pin file
    (None for an import workdir, whose one step never changes, or a Hugging Face folder)."""
    if not os.path.isfile(info_path(base_workdir)) or kind_of(read_run_info(base_workdir)) != "train":
        return None
    lora_workdir = os.path.abspath(lora_workdir)
    root = os.path.join(base_workdir, PINS)
    os.makedirs(root, exist_ok=True)
    path = os.path.join(root, hashlib.sha256(lora_workdir.encode()).hexdigest()[:16] + ".json")
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump({"step": int(step), "lora_workdir": lora_workdir}, f)
    os.replace(tmp, path)
    return path


def pinned_steps(workdir: str) -> set[int]:
    """The steps of `workdir` that LoRA runs pinned."""
    root, out = os.path.join(workdir, PINS), set()
    for name in sorted(os.listdir(root)) if os.path.isdir(root) else ():
        if name.endswith(".json"):
            try:
                with open(os.path.join(root, name)) as f:
                    out.add(int(json.load(f)["step"]))
            except (OSError, ValueError, KeyError, TypeError):
                continue
    return out
