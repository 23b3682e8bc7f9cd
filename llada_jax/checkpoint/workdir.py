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
copied workdir keeps working.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time

KINDS = ("train", "import")
LOCK = "lock"
# Entries a training run creates before its run.json exists (e.g. killed while training
# the tokenizer): a directory holding only these is still ours to resume.
_OURS = {"checkpoints", "tokenizer.model", "tokenizer.vocab", "metrics.jsonl", "tensorboard", "data_cache",
         "quarantine", LOCK}


class WorkdirError(ValueError):
    """A workdir that this run must not write: owned by another kind, locked, foreign."""


def _pid_alive(pid: int) -> bool:
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


@contextlib.contextmanager
def lock(workdir: str, purpose: str, *, enabled: bool = True):
    """Hold `workdir/lock` for the duration of the block (WorkdirError if held)."""
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
            if holder and same_host and isinstance(holder.get("pid"), int) and not _pid_alive(holder["pid"]):
                os.replace(path, path + f".stale{os.getpid()}")  # atomic: one taker wins
                os.remove(path + f".stale{os.getpid()}")
                continue
            if not holder:
                raise WorkdirError(f"--workdir={workdir!r} is locked by an unreadable {path}; if no other run "
                                   f"uses this workdir, delete that file") from None
            raise WorkdirError(
                f"--workdir={workdir!r} is in use: {holder.get('purpose', '?')} run pid {holder.get('pid')} on "
                f"host {holder.get('host')} since {holder.get('since')} holds {path}; wait for it to end, or "
                f"delete that file if the process is gone" + ("" if same_host else " (a process on another "
                                                               "host cannot be checked from here)")) from None
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        break
    else:
        raise WorkdirError(f"--workdir={workdir!r}: could not take {path} (it keeps changing hands)")
    try:
        yield
    finally:
        if (_holder(path) or {}).get("pid") == me["pid"]:
            os.remove(path)


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


def write_run_info(workdir: str, kind: str, **fields):
    """Write run.json atomically: {"kind", **fields}; a "tokenizer" path inside the
    workdir is stored relative to it."""
    info = {"kind": kind, **fields}
    if info.get("tokenizer"):
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
