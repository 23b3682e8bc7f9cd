"""The rules about the data paths a run config names: each exists and is of the kind its
field expects. `rules.check_train` checks them before anything expensive runs, and the
readers (`training.inputs`) resolve the paths through the same functions. Not a rule of
the config's shape: `plan` validates configs on machines without the data."""

from __future__ import annotations

import os


def text_files(spec: str, field: str) -> list[str]:
    """The comma-separated text files of config.data.`field`, each existing."""
    files = [f for f in (s.strip() for s in spec.split(",")) if f]
    if not files:
        raise ValueError(f"config.data.{field}={spec!r}: expected comma-separated text files")
    for f in files:
        if not os.path.isfile(f):
            raise ValueError(f"config.data.{field}={spec!r}: {f!r} does not exist (expected existing text files)")
    return files


def jsonl_file(path: str, field: str) -> str:
    if not path:
        raise ValueError(f"config.data.{field} is empty: expected a chat JSONL file for SFT")
    if not os.path.isfile(path):
        raise ValueError(f"config.data.{field}={path!r}: no such file (expected a chat JSONL file)")
    return path


def prepared_dir(path: str, field: str) -> str:
    """A directory of `python -m llada_jax.prepare_data`, with its index."""
    from llada_jax.data import prepared

    if not path:
        why = ("; evaluation (train.eval_every) needs prepared held-out data: prepare it, or set "
               "config.train.eval_every=0") if field == "eval_path" else ""
        raise ValueError(f"config.data.{field} is empty: expected a directory made by "
                         f"`python -m llada_jax.prepare_data` (source 'prepared'){why}")
    prepared.read_index(path, field=f"config.data.{field}")
    return path


def evaluating(config) -> bool:
    return bool(config.train.eval_every and config.train.eval_batches)


def check_paths(config, *, eval_only: bool = False) -> None:
    """ValueError naming the field, the value and what was expected for each data path a run
    of `config` reads (the tokenizer file, the text or JSONL files, a prepared directory's
    index; the held-out ones only when the run evaluates)."""
    d = config.data
    held_out = evaluating(config) or eval_only
    if d.tokenizer and not os.path.exists(d.tokenizer):
        raise ValueError(f"config.data.tokenizer={d.tokenizer!r}: no such file or directory (expected a "
                         "tokenizer .model, tokenizer.json or a directory holding one)")
    if d.source == "files":
        if not eval_only:
            text_files(d.train_files, "train_files")
        if held_out:
            text_files(d.eval_files, "eval_files")
    elif d.source == "jsonl":
        jsonl_file(d.train_jsonl, "train_jsonl")
        if d.eval_jsonl:
            jsonl_file(d.eval_jsonl, "eval_jsonl")
    elif d.source == "prepared":
        prepared_dir(d.path, "path")
        from llada_jax.data import prepared

        if not d.tokenizer and prepared.tokenizer_file(d.path) is None:
            raise ValueError(f"config.data.path={d.path!r} holds no tokenizer file; set config.data.tokenizer")
        if held_out:
            prepared_dir(d.eval_path, "eval_path")
