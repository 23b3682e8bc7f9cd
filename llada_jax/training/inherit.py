"""What a training run takes from its base and its tokenizer instead of the config.

A config leaves the inheritable model fields unset (None; `llada_jax.config.MODEL_DEFAULTS`
names them and explains why None marks "unset"); `resolve` fills them, before anything
compiles, from (first that applies):

1. this workdir's run.json, when the run resumes: the values the run started with, so a
   restart builds the same model even if its base or data moved;
2. `train.init_from`: a workdir of ours (its run.json's model) or a Hugging Face folder
   (config.json, as `llada_jax.interop` reads it); the special ids left at -1 come from it
   too, and its tokenizer becomes the run's when `data.tokenizer` is empty (not for the
   prepared or synthetic sources, which bring their own);
3. the run's tokenizer (data.tokenizer, or a prepared folder's): vocab_size;
4. MODEL_DEFAULTS (embedding_size: the vocab_size).

A SHAPE field the user set that differs from the base's is a ValueError naming the field
and both values; the other fields they set (max_sequence_length, rope_theta, causal,
block_size, ...) override the base's. The resolved values are the ones run.json records.

`run_tokenizer` copies the run's tokenizer into the workdir (run.json then names the copy
by a workdir-relative path and its sha256), so moving or deleting the data folder or the
base breaks no restart, export or sampling; a different file already there is an error,
never overwritten. `init_params` reads `train.init_from`'s params from either kind of base.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import shutil

from llada_jax.checkpoint import load, workdir as workdir_lib
from llada_jax.config import model_field, set_model_field, unset_fields, with_model_defaults

# Fields that decide the parameter arrays (or how a checkpoint's arrays are read): a base's
# params cannot be used with other values.
SHAPE = ("family", "d_model", "n_heads", "n_kv_heads", "n_layers", "mlp_hidden_size", "vocab_size",
         "embedding_size", "weight_tying", "qkv_bias", "qk_norm", "attention_head_dim", "mlp",
         "moe.num_experts", "moe.expert_hidden_size", "moe.shared_hidden_size", "moe.first_k_dense",
         "moe.expert_bias")
IDS = ("mask_token_id", "eos_token_id", "pad_token_id")
TOKENIZER_NAMES = ("tokenizer.json", "tokenizer.model")  # a Hugging Face folder's, preferred first


def _base_dir(init_from: str) -> str:
    """The workdir of `init_from` (a workdir, its checkpoints/ directory, or a HF folder)."""
    path = os.path.normpath(init_from)
    return os.path.dirname(path) if os.path.basename(path) == "checkpoints" else path


def base_of(init_from: str) -> tuple[dict, str | None]:
    """(model fields as run.json writes them, tokenizer file or None) of `init_from`.
    ValueError naming config.train.init_from for a path that is neither kind of base."""
    from llada_jax.interop import import_hf, layout

    path = _base_dir(init_from)
    field = f"config.train.init_from={init_from!r}"
    if not os.path.isdir(path):
        raise ValueError(f"{field}: no such directory (expected a training or import_hf workdir, or a "
                         f"Hugging Face model folder)")
    if import_hf.is_hf_dir(path):
        model = dataclasses.asdict(layout.config_from_hf(layout.read_config(path), os.path.join(path, "config.json")))
        found = [os.path.join(path, n) for n in TOKENIZER_NAMES if os.path.isfile(os.path.join(path, n))]
        return model, (found[0] if found else None)
    if not os.path.isfile(workdir_lib.info_path(path)):
        raise ValueError(f"{field}: holds neither run.json nor config.json (expected a training or import_hf "
                         f"workdir, or a Hugging Face model folder)")
    load.check_not_lora(path)  # its run.json describes adapters on another base
    info = workdir_lib.read_run_info(path)
    return info["model"], workdir_lib.tokenizer_path(info, path)


def _describe(m) -> str:
    return (f"{m.family}, d_model={m.d_model}, n_layers={m.n_layers}, n_heads={m.n_heads}, "
            f"vocab_size={m.vocab_size}, mask/eos/pad={m.mask_token_id}/{m.eos_token_id}/{m.pad_token_id}")


def resolve(config, workdir: str | None = None, saved_info: dict | None = None, say=print):
    """A copy of `config` with every inheritable model field filled (see the module
    docstring); `saved_info`: this workdir's run.json when the run resumes. ValueError for a
    SHAPE field set against the base, a vocab_size below the tokenizer's, or a base that
    cannot be read. Reads run.json / config.json and the tokenizer file; compiles nothing."""
    config = copy.deepcopy(config)
    m, d, t = config.model, config.data, config.train
    unset = unset_fields(m)
    saved_model = ((saved_info or {}).get("config") or {}).get("model")
    if saved_model:  # a restart: the run's own values, whatever its base or data do now
        for name in unset:
            try:
                set_model_field(m, name, model_field(saved_model, name))
            except KeyError:  # a run.json older than the field: its default
                pass
        for k in IDS:
            if m[k] == -1:
                m[k] = saved_model.get(k, -1)
        _use_copy_if_gone(config, workdir, saved_info, say)
    elif t.init_from:
        base, base_tok = base_of(t.init_from)
        wrong = [f"config.model.{f}={model_field(m, f)!r} but the base has {f}={model_field(base, f)!r}"
                 for f in SHAPE if f not in unset and model_field(m, f) != model_field(base, f)]
        if wrong:
            raise ValueError(f"config.train.init_from={t.init_from!r}: {'; '.join(wrong)}. Its params need its "
                             f"shape: leave these fields unset to take the base's, or start without init_from")
        for name in unset:
            set_model_field(m, name, model_field(base, name))
        for k in IDS:
            if m[k] == -1:
                m[k] = base[k]
        if not d.tokenizer and d.source not in ("prepared", "synthetic") and base_tok:
            d.tokenizer = base_tok
        say(f"config.train.init_from={t.init_from!r}: model {_describe(m)}"
            + (f", tokenizer {base_tok}" if d.tokenizer == base_tok else "") + " taken from it")
    _vocab(config, "vocab_size" in unset and not saved_model and bool(t.init_from))
    return with_model_defaults(config)


def _use_copy_if_gone(config, workdir, saved_info, say) -> None:
    """Resuming: a data.tokenizer that is gone is replaced by the run's copy in the workdir."""
    d, saved = config.data, (saved_info or {}).get("tokenizer")
    if not (workdir and d.tokenizer and saved) or os.path.exists(d.tokenizer) or not os.path.isfile(saved):
        return
    if _inside(saved, workdir):
        say(f"config.data.tokenizer={d.tokenizer!r} is gone; using this run's copy {saved}")
        d.tokenizer = saved


def _inside(path: str, workdir: str) -> bool:
    path, root = os.path.abspath(path), os.path.abspath(workdir)
    return os.path.commonpath([path, root]) == root


def tokenizer_source(config) -> str | None:
    """The tokenizer file a run of `config` reads when one exists before the run (data.tokenizer,
    or the prepared folder's); None when it trains one (stdlib, files) or has none (synthetic)."""
    from llada_jax.data import prepared

    d = config.data
    if d.source == "synthetic":
        return None
    if d.tokenizer and os.path.isdir(d.tokenizer):  # a folder holding one, as data.tokenizer may name
        found = [os.path.join(d.tokenizer, n) for n in TOKENIZER_NAMES if os.path.isfile(os.path.join(d.tokenizer, n))]
        return found[0] if found else d.tokenizer
    if d.tokenizer:
        return d.tokenizer
    if d.source == "prepared" and d.path and os.path.isdir(d.path):
        return prepared.tokenizer_file(d.path)
    return None


def _vocab(config, inherited: bool) -> None:
    """vocab_size from the run's tokenizer when unset; a ValueError naming the value, the
    tokenizer's size and the flag that fixes it when the vocab_size is too small."""
    from llada_jax.data.tokenizer import load_tokenizer

    m, path = config.model, tokenizer_source(config)
    if not path or not os.path.exists(path):
        return  # nothing to read yet (a trained tokenizer), or a missing path: config.rules.check_paths names it
    n = load_tokenizer(path).vocab_size
    if m.vocab_size is None:
        m.vocab_size = n
    elif m.vocab_size < n and inherited:
        raise ValueError(f"config.model.vocab_size={m.vocab_size} (from config.train.init_from="
                         f"{config.train.init_from!r}): expected >= {n}, the vocabulary of the tokenizer {path}; "
                         f"use the base's tokenizer (leave config.data.tokenizer unset) or data made with it")
    elif m.vocab_size < n:
        raise ValueError(f"config.model.vocab_size={m.vocab_size}: expected >= {n}, the vocabulary of the "
                         f"tokenizer {path}; set --config.model.vocab_size={n}")
    if m.embedding_size is not None and m.embedding_size < m.vocab_size:
        raise ValueError(f"config.model.embedding_size={m.embedding_size}: expected >= vocab_size={m.vocab_size}; "
                         f"set --config.model.embedding_size={m.vocab_size} or leave it unset")


def copy_tokenizer(source: str, workdir: str) -> str:
    """WORKDIR/tokenizer.model (or .json) holding the bytes of `source`; an identical copy is
    kept, a different file there is a ValueError (never overwritten)."""
    dest = os.path.join(workdir, "tokenizer.json" if source.endswith(".json") else "tokenizer.model")
    if os.path.abspath(source) == os.path.abspath(dest):
        return dest
    want = workdir_lib.file_sha256(source)
    if os.path.exists(dest):
        have = workdir_lib.file_sha256(dest)
        if have != want:
            raise ValueError(f"--workdir={workdir!r} holds {dest} (sha256 {have[:12]}), another tokenizer than "
                             f"this run's {source} ({want[:12]}); it is not overwritten: use a new --workdir, or "
                             f"the tokenizer this workdir was made with")
        return dest
    tmp = f"{dest}.tmp{os.getpid()}"
    shutil.copyfile(source, tmp)
    os.replace(tmp, dest)
    return dest


def run_tokenizer(config, workdir: str, primary: bool = True):
    """The run's tokenizer, loaded from its copy in `workdir` (process 0 copies it there;
    the others read the source): `training.inputs.load_tokenizer` otherwise."""
    from llada_jax.data.tokenizer import load_tokenizer
    from llada_jax.training import inputs

    source = tokenizer_source(config)
    if source is None or not os.path.isfile(source) or _inside(source, workdir) or not primary:
        return inputs.load_tokenizer(config, workdir)
    return load_tokenizer(copy_tokenizer(source, workdir))


def init_params(init_from: str, abstract):
    """(step, params) of `train.init_from` placed as `abstract` says: a workdir's latest
    checkpoint, or a Hugging Face folder's safetensors (step 0)."""
    from llada_jax.checkpoint import manager
    from llada_jax.interop import import_hf

    if import_hf.is_hf_dir(_base_dir(init_from)):
        return 0, import_hf.restore_like(_base_dir(init_from), abstract)
    return manager.restore_params(init_from, abstract)
