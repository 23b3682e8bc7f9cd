"""Export parameters as a Hugging Face directory that PyTorch loads.

`save_pretrained` streams: each output tensor (one layer slice of a stacked
parameter) is cast on its devices, gathered to the host alone, written into the
current safetensors shard and dropped, so the host never holds the whole model.

Command line: `python -m llada_jax.export --workdir=DIR [--step=N] --out=HF_DIR
[--tokenizer=PATH] [--dtype=bfloat16] [--overwrite] [--peft --base_model=BASE_HF_DIR]` exports a
training checkpoint of DIR (the latest step unless --step); see `main` for where the model shape
comes from. A LoRA workdir is exported merged (in --dtype), or with `--peft` as its adapters alone
(`save_peft`) for the exported base folder --base_model (`llada_jax.interop.peft_base`).

Nothing is ever mixed: the files are written into a fresh temporary directory next to
the target and moved into place at the end. A non-empty target is refused unless
`overwrite`, which replaces it whole, and only when it is an earlier export (`check_target`:
nothing but the files an export writes; never a workdir, nor inside one). What a killed
export left beside the target (its temporary or set-aside directory) is cleaned up by the
next export into the same place.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket

import jax
import numpy as np

from llada_jax.interop import layout, peft_base, safetensors_io, tokenizer_files
from llada_jax.interop.safetensors_io import hf_parse_size
from llada_jax.model.adapters import lora
from llada_jax.model import LLaDAConfig, families

EXPORT_DTYPES = ("float32", "bfloat16", "float16")
PEFT_PREFIX = "base_model.model."  # PeftModel -> LoraModel -> our model


def gatherer(dtype):
    """gather(leaf, idx) -> host copy of `leaf` (its layer `idx` when stacked) in `dtype`.

    The slice and cast run on the devices, so only the one output tensor, already in
    the export dtype, crosses to the host. Arrays spanning several hosts are gathered
    with process_allgather, a collective: every process must call it in the same order.
    One export builds one gatherer: its two jitted functions live as long as the export
    (jit compiles each once per shape and sharding), not in a process-wide cache.
    """
    slice_cast = jax.jit(lambda a, i: jax.lax.dynamic_slice(  # a[i_1, ..., i_n] (layer, or layer and expert)
        a, tuple(i) + (0,) * (a.ndim - len(i)), (1,) * len(i) + a.shape[len(i):]).reshape(a.shape[len(i):]).astype(dtype))
    cast = jax.jit(lambda a: a.astype(dtype))

    def gather(leaf, idx: int | None) -> np.ndarray:
        if isinstance(leaf, jax.Array):
            x = cast(leaf) if idx is None else slice_cast(leaf, np.atleast_1d(np.asarray(idx, np.int32)))
            if not x.is_fully_addressable:
                from jax.experimental import multihost_utils

                x = multihost_utils.process_allgather(x, tiled=True)
            return np.asarray(x)
        x = np.asarray(leaf if idx is None else leaf[idx])
        return x.astype(dtype, copy=False)
    return gather


def save_pretrained(config: LLaDAConfig, params, path: str, *, max_shard_size="5GB", dtype="bfloat16",
                    tokenizer=None, overwrite: bool = False) -> list[str]:
    """Write a Hugging Face directory that the published PyTorch code, our
    `llada_jax.interop.torch_model` and `AutoModel.from_pretrained(path, trust_remote_code=True)` load.

    Files: config.json (the official field names and values, plus an auto_map to
    modeling_llada.py, a copy of our torch module), model.safetensors or
    model-0000k-of-0000n.safetensors shards with model.safetensors.index.json,
    generation_config.json, and the tokenizer files when `tokenizer` is given (a
    directory holding tokenizer.json / tokenizer.model etc., a sentencepiece .model file,
    a tokenizer.json, a `llada_jax.data.tokenizer` object, or one with save_pretrained(dir)).
    params: numpy or (sharded) jax arrays, in our layout (stacked or not as config says).
    max_shard_size: bytes per safetensors file (int, or "5GB" / "500MB"; decimal units).
    dtype: one of EXPORT_DTYPES.
    overwrite: replace a non-empty `path` (whole); otherwise that is a ValueError. The files
    are written into a temporary directory beside `path` and moved there at the end.
    Multi-host: every process must call this (the gathers are collective); only
    process 0 writes files. Returns the safetensors file names.
    """
    if str(dtype) not in EXPORT_DTYPES and not (hasattr(dtype, "name") and dtype.name in EXPORT_DTYPES):
        raise ValueError(f"--dtype={dtype!r}: expected one of {', '.join(EXPORT_DTYPES)}")
    check_target(path, overwrite)
    layout.check_params(config, params)
    np_dtype = safetensors_io.np_dtype(dtype)
    max_bytes = hf_parse_size(max_shard_size)
    if jax.process_index() != 0:
        return _write_files(config, params, None, np_dtype, max_bytes, None)
    return write_dir_atomically(path, lambda tmp: _write_files(config, params, tmp, np_dtype, max_bytes, tokenizer))


def write_dir_atomically(path: str, write):
    """`write(tmp)` into a fresh temporary directory beside `path`, then move it into place
    (an earlier `path` is replaced whole, never mixed). Returns what `write` returns."""
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{os.path.basename(os.path.abspath(path))}.tmp{_ME}")
    os.makedirs(tmp)
    try:
        out = write(tmp)
        _move_into_place(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # our own half-written temporary directory
        raise
    return out


_ME = f"-{socket.gethostname()}-{os.getpid()}"  # names this process's temporary directories
# The files an export writes (save_pretrained, save_peft, the tokenizer's): a directory
# holding anything else is not an export, and is never replaced.
_EXPORT_FILES = re.compile(r"(config\.json|generation_config\.json|model\.safetensors(\.index\.json)?|"
                           r"model-\d{5}-of-\d{5}\.safetensors|adapter_config\.json|adapter_model\.safetensors|"
                           r"(modeling|configuration|tokenization)_\w+\.py)")


def _clean_partial(path: str) -> None:
    """Remove what a killed export into `path` left beside it (this host's, its process
    gone): `.NAME.tmp-HOST-PID` (half-written) and `.NAME.old-HOST-PID` (the export it was
    replacing: put back when `path` is missing, else superseded). Another host's are
    reported, not touched (its process cannot be checked from here)."""
    parent, name = os.path.split(os.path.abspath(path))
    pattern, here = re.compile(rf"\.{re.escape(name)}\.(tmp|old)-(.+)-(\d+)"), socket.gethostname()
    from llada_jax.checkpoint.workdir import pid_alive

    for entry in sorted(os.listdir(parent)) if os.path.isdir(parent) else ():
        m = pattern.fullmatch(entry)
        left = os.path.join(parent, entry)
        if not m or (m.group(2) == here and pid_alive(int(m.group(3)))):
            continue
        if m.group(2) != here:
            print(f"--out={path!r}: {left} was left by an export on host {m.group(2)} (pid {m.group(3)}); "
                  f"delete it once that export is gone")
        elif m.group(1) == "old" and not os.path.exists(path):
            os.rename(left, path)
            print(f"--out={path!r}: put back the earlier export that a killed export had set aside ({left})")
        else:
            shutil.rmtree(left)
            print(f"--out={path!r}: removed {left}, left by a killed export")


def _inside_workdir(path: str) -> str | None:
    """The workdir (a directory holding run.json) that `path` is or lies in, if any."""
    p = os.path.abspath(path)
    while True:
        if os.path.isfile(os.path.join(p, "run.json")):
            return p
        if os.path.dirname(p) == p:
            return None
        p = os.path.dirname(p)


def check_target(path: str, overwrite: bool):
    """ValueError for an export target that is not new, empty or (with `overwrite`) an
    earlier export: a file, a workdir or a directory inside one, or a directory holding
    anything an export does not write (a sub-directory, a user's file), with or without
    `overwrite`. First cleans what a killed export left (`_clean_partial`)."""
    _clean_partial(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"--out={path!r} is a file; expected a new or empty directory")
    if os.path.isdir(path) and {"run.json", "checkpoints"} & set(os.listdir(path)):
        raise ValueError(f"--out={path!r} is a llada_jax workdir (run.json, checkpoints/); an export never "
                         f"replaces one, even with --overwrite: choose another directory")
    workdir = _inside_workdir(path)
    if workdir is not None:
        raise ValueError(f"--out={path!r} lies inside the llada_jax workdir {workdir}; export to a directory "
                         f"outside any workdir")
    if not os.path.exists(path):
        return
    foreign = sorted(f + "/" if os.path.isdir(os.path.join(path, f)) else f for f in os.listdir(path)
                     if os.path.isdir(os.path.join(path, f)) or not (
                         _EXPORT_FILES.fullmatch(f) or f in layout.TOKENIZER_FILES))
    if foreign:
        raise ValueError(f"--out={path!r} holds what an export does not write ({', '.join(foreign[:4])}); an "
                         f"export replaces only an earlier export, even with --overwrite: choose a new or "
                         f"empty directory")
    if os.listdir(path) and not overwrite:
        raise ValueError(f"--out={path!r} is not empty (it holds {', '.join(sorted(os.listdir(path))[:4])}); "
                         f"choose a new directory, or pass --overwrite to replace it whole")


def _move_into_place(tmp: str, path: str):
    """Rename `tmp` to `path`; an existing `path` is first renamed aside, then removed."""
    old = None
    if os.path.exists(path):
        old = os.path.join(os.path.dirname(os.path.abspath(path)),
                           f".{os.path.basename(os.path.abspath(path))}.old{_ME}")
        os.rename(path, old)
    try:
        os.rename(tmp, path)
    except BaseException:
        if old is not None:
            os.rename(old, path)  # put the previous export back
        raise
    if old is not None:
        shutil.rmtree(old)


def _plan(config, np_dtype, max_bytes):
    expected = layout.expected_shapes(config)
    mapping = {name: (p, idx, to_t) for name, p, idx, to_t, _ in layout.tensor_map(config)}
    shards = safetensors_io.plan_shards([(name, expected[name]) for name in mapping], np_dtype, max_bytes)
    return expected, shards, mapping


def _write_files(config, params, path, np_dtype, max_bytes, tokenizer) -> list[str]:
    """Gather every tensor (a collective: all processes call this); write when `path`."""
    writer = path is not None
    expected, shards, mapping = _plan(config, np_dtype, max_bytes)
    gather = gatherer(np_dtype)
    for fname, shard in shards:
        out = safetensors_io.ShardWriter(os.path.join(path, fname), shard, np_dtype) if writer else None
        for name, _ in shard:
            p, idx, to_t = mapping[name]
            host = (tuple(gather(layout.leaf(params, q), idx) for q in p) if layout.is_fused(p)
                    else gather(layout.leaf(params, p), idx))  # fused: one tensor of several leaves
            if out is not None:
                out.write(name, to_t(host))
            del host  # one tensor on the host at a time
        if out is not None:
            out.close()
    files = [fname for fname, _ in shards]
    if not writer:
        return files
    if len(shards) > 1:
        index = {"metadata": {"total_size": sum(safetensors_io.nbytes(expected[n], np_dtype) for n in mapping)},
                 "weight_map": {name: fname for fname, shard in shards for name, _ in shard}}
        _write_json(os.path.join(path, "model.safetensors.index.json"), index)
    _write_json(os.path.join(path, "config.json"), layout.config_to_hf(config, torch_dtype=np_dtype.name))
    _write_json(os.path.join(path, "generation_config.json"),
                {"_from_model_config": True, "eos_token_id": config.eos_token_id,
                 "pad_token_id": config.pad_token_id})
    for name, source in families.get(config.family).MODELING_FILES.items():  # the family's custom code
        shutil.copyfile(source, os.path.join(path, name))
    if tokenizer is not None:
        save_tokenizer(tokenizer, path)
        tokenizer_files.write_special_tokens(path, config.max_sequence_length)  # mask, EOS, pad, chat template
    return files


def save_tokenizer(tokenizer, path: str) -> list[str]:
    """Copy the files of `tokenizer` (see save_pretrained) into `path`; returns their names."""
    if hasattr(tokenizer, "save_pretrained"):
        tokenizer.save_pretrained(path)
        return sorted(os.listdir(path))
    if hasattr(tokenizer, "path"):  # a llada_jax.data.tokenizer.Tokenizer: copy the file it was loaded from
        tokenizer = tokenizer.path
    src = os.fspath(tokenizer)
    if os.path.isdir(src):
        found = [f for f in layout.TOKENIZER_FILES if os.path.isfile(os.path.join(src, f))]
        if not found:
            raise ValueError(f"tokenizer={src!r}: the directory holds none of {layout.TOKENIZER_FILES}")
        for f in found:
            shutil.copyfile(os.path.join(src, f), os.path.join(path, f))
        return found
    if os.path.isfile(src) and src.endswith(".model"):
        shutil.copyfile(src, os.path.join(path, "tokenizer.model"))
        return ["tokenizer.model"]
    if os.path.isfile(src) and src.endswith(".json"):
        shutil.copyfile(src, os.path.join(path, "tokenizer.json"))
        return ["tokenizer.json"]
    raise ValueError(f"tokenizer={src!r}: expected a directory with tokenizer files, a sentencepiece "
                     f".model file, a tokenizer.json, or a tokenizer object")


def _write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def peft_target_regex(config: LLaDAConfig) -> str:
    """PEFT target_modules (a regex that must match a module's full name): the adapted
    projections of the blocks only, not the output head (also named ff_out), in the
    family's module names."""
    names = [families.get(config.family).peft_module(config, 0, t) for t in config.lora.targets]
    prefix = names[0].split(".0.")[0]
    return re.escape(prefix) + r"\.\d+\.(" + "|".join(re.escape(n.split(".0.", 1)[1]) for n in names) + ")"


def save_peft(config: LLaDAConfig, params, path: str, *, base_model: str | None = None,
              dtype="float32", overwrite: bool = False) -> list[str]:
    """Write the adapters of `params` in the PEFT format into `path`: adapter_config.json
    and adapter_model.safetensors with `base_model.model.{module}.lora_{A,B}.weight` of every adapted
    weight ({module}: the family's `peft_module`, e.g. `model.layers.{i}.self_attn.q_proj`) as
    PyTorch Linear weights (A: [r, in], B: [out, r]), loadable with
    `peft.PeftModel.from_pretrained(our exported base model, path)`. Returns the file names.
    A non-empty `path` is refused unless `overwrite` (then replaced whole), as for the HF export."""
    cfg = config.lora
    if not cfg.rank:
        raise ValueError("save_peft: the model has no LoRA adapters (config.lora.rank=0)")
    check_target(path, overwrite)
    np_dtype = safetensors_io.np_dtype(dtype)
    gather = gatherer(np_dtype)
    entries, tensors = [], []
    for i in range(config.n_layers):
        for name in cfg.targets:
            found = layout.block_path(config, i, name)
            if found is None:  # an MoE layer: no dense MLP
                continue
            p, idx = found
            a_path, b_path = p[:-1] + (name + lora.SUFFIX_A,), p[:-1] + (name + lora.SUFFIX_B,)
            key = PEFT_PREFIX + families.get(config.family).peft_module(config, i, name)
            a = gather(layout.leaf(params, a_path), idx)
            b = gather(layout.leaf(params, b_path), idx)
            a_t = np.ascontiguousarray(a.reshape(-1, cfg.rank).T)  # [r, in]
            b_t = np.ascontiguousarray(b.reshape(cfg.rank, -1).T)  # [out, r]
            for suffix, t in ((".lora_A.weight", a_t), (".lora_B.weight", b_t)):
                entries.append((key + suffix, t.shape))
                tensors.append(t)
    if jax.process_index() != 0:
        return ["adapter_config.json", "adapter_model.safetensors"]

    def write(tmp):
        out = safetensors_io.ShardWriter(os.path.join(tmp, "adapter_model.safetensors"), entries, np_dtype)
        for (name, _), t in zip(entries, tensors):
            out.write(name, t)
        out.close()
        adapter_config = {
            "peft_type": "LORA", "task_type": None, "base_model_name_or_path": base_model,
            "r": cfg.rank, "lora_alpha": cfg.alpha, "lora_dropout": cfg.dropout,
            "target_modules": peft_target_regex(config), "bias": "none", "fan_in_fan_out": False,
            "inference_mode": True, "init_lora_weights": True, "use_rslora": False, "use_dora": False,
            "modules_to_save": None, "layers_to_transform": None, "layers_pattern": None,
            "rank_pattern": {}, "alpha_pattern": {},
        }
        _write_json(os.path.join(tmp, "adapter_config.json"), adapter_config)

    write_dir_atomically(path, write)
    return ["adapter_config.json", "adapter_model.safetensors"]


def export_mesh(config: LLaDAConfig):
    """All local devices as fsdp over d_model where it divides (no device holds the whole
    model); None (one device) otherwise."""
    from llada_jax.parallel import sharding

    n = jax.device_count()
    return sharding.make_mesh({"data": 1, "fsdp": n, "tensor": 1}) if config.d_model % n == 0 else None


def define_flags(fv):
    """The flags of `python -m llada_jax.export`, on absl FlagValues `fv`."""
    from absl import flags

    on = {"flag_values": fv}
    flags.DEFINE_string("workdir", None, "training (or import) workdir with run.json and checkpoints/, required", **on)
    flags.DEFINE_integer("step", None, "checkpoint step (default: the latest readable)", **on)
    flags.DEFINE_string("out", None, "output Hugging Face directory, required", **on)
    flags.DEFINE_enum("dtype", "bfloat16", EXPORT_DTYPES, "tensor dtype in the files (bfloat16 as published)", **on)
    flags.DEFINE_boolean("overwrite", False, "replace a non-empty --out directory whole", **on)
    flags.DEFINE_string("max_shard_size", "5GB",
                        "bytes per safetensors file: 5GB, 500MB (decimal units), 2GiB or a count", **on)
    flags.DEFINE_string("tokenizer", None,
                        "tokenizer file or directory to include (default: the one in run.json, if any)", **on)
    flags.DEFINE_boolean("peft", False,
                         "LoRA workdir: write the adapters alone in the PEFT format, not merged weights", **on)
    flags.DEFINE_string("base_model", None,
                        "with --peft: the exported base folder the adapters apply to, as adapter_config.json's "
                        "base_model_name_or_path (as given); it must hold the base the adapters were trained on", **on)


def main(argv=None):
    """`python -m llada_jax.export`, `argv` without the program name (default sys.argv[1:]).
    The model shape is the workdir's (run.json `model`)."""
    from llada_jax import cli

    args = cli.parse(define_flags, argv, "Export a training checkpoint as a Hugging Face directory.",
                     required=("workdir", "out"))
    from llada_jax.checkpoint import workdir as workdir_lib
    from llada_jax.checkpoint.load import load_workdir, merge_lora

    with cli.user_errors():
        check_target(args.out, args.overwrite)  # before any restore
        hf_parse_size(args.max_shard_size)
        info = workdir_lib.read_run_info(args.workdir)
        # Reading needs no lock (a read-only workdir exports), only that no run writes it now.
        workdir_lib.check_unlocked(args.workdir)
        base = (info.get("lora_base") or {}).get("workdir")
        if args.peft and base is not None:  # (not a LoRA run: save_peft says so)
            peft_base.check_dir(args.base_model, base, (info["model"].get("param_dtype") or "bfloat16"))
        tok = None if args.peft else args.tokenizer or workdir_lib.tokenizer_path(info, args.workdir)
        w = load_workdir(args.workdir, export_mesh(LLaDAConfig(**info["model"])), step=args.step,
                         tokenizer=False)
        config, step, params = w.config, w.step, w.params
        if args.peft:
            if base is not None:
                peft_base.check_weights(config, params, args.base_model, base, gatherer(np.float32))
            files = save_peft(config, params, args.out, base_model=args.base_model, overwrite=args.overwrite)
        else:
            config, params = merge_lora(config, params, dtype=args.dtype)  # no rounding below --dtype
            files = save_pretrained(config, params, args.out, max_shard_size=args.max_shard_size,
                                    dtype=args.dtype, tokenizer=tok, overwrite=args.overwrite)
    print(json.dumps({"out": os.path.abspath(args.out), "step": int(step), "files": files}))
