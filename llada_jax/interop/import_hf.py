"""Import a Hugging Face LLaDA directory (the published LLaDA-8B or our own export).

`load_pretrained` reads the safetensors tensor by tensor and places each directly on
its devices, so host memory peaks at about one tensor, not the model.

Command line: `python -m llada_jax.import_hf --src=HF_DIR --workdir=DIR` writes the
parameters as a step-0 checkpoint of DIR (the orbax layout of `llada_jax.checkpoint`),
which `--config.train.init_from=DIR` of configs/sft.py fine-tunes and
`python -m llada_jax.generate` samples; a run from DIR inherits its model and tokenizer
(`llada_jax.training.inherit`); the printed `--config.model.*` flags spell the shape out
for a config used without DIR. DIR also gets run.json (model config, tokenizer path, as a
training run writes it), the tokenizer files, and the config.json as hf_config.json.
DIR must be new or empty (llada_jax.checkpoint.workdir): an import never replaces a training run
or an earlier import; train from it with `--config.train.init_from=DIR`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec, SingleDeviceSharding

from llada_jax.interop import layout, safetensors_io
from llada_jax.model import DTYPES, LLaDAConfig, abstract_params
from llada_jax.parallel import sharding as sharding_lib


def _layer_sharding(sharding, n: int = 1):
    """The sharding of one layer of a stacked parameter: drop the n leading stacked axes."""
    if isinstance(sharding, SingleDeviceSharding):
        return sharding
    if isinstance(sharding, NamedSharding):
        return NamedSharding(sharding.mesh, PartitionSpec(*tuple(sharding.spec)[n:]))
    raise ValueError(f"sharding {sharding!r} of a stacked parameter: expected a NamedSharding or "
                     f"SingleDeviceSharding")


class TreeBuilder:
    """Assembles our parameter tree from host tensors delivered one at a time.

    A stacked parameter starts as zeros made on its devices and is filled one layer at a
    time by a jitted update that donates it (XLA writes the layer in place: no second
    copy). The builder holds those jitted setters, one per sharding, for as long as it
    builds (one load): no process-wide cache."""

    def __init__(self, config: LLaDAConfig, shardings=None):
        self.config, self.shardings, self.tree = config, shardings, {}
        self.shapes = layout.our_shapes(config)  # stacked leaves: (layers[, experts]) + one layer's shape
        self.default = SingleDeviceSharding(jax.devices()[0])
        self._setters = {}  # sharding -> jitted (stacked, layer, i) -> stacked

    def _sharding(self, path):
        if self.shardings is None:
            return self.default
        return layout.leaf(self.shardings, path)

    def _setter(self, sharding, n):
        """stacked[i_1, ..., i_n] = layer, in place (n stacked axes: layers, or layers x experts)."""
        if (sharding, n) not in self._setters:
            self._setters[sharding, n] = jax.jit(
                lambda stacked, layer, i: jax.lax.dynamic_update_slice(
                    stacked, layer.reshape((1,) * n + layer.shape), tuple(i) + (0,) * layer.ndim),
                out_shardings=sharding, donate_argnums=0)
        return self._setters[sharding, n]

    def put(self, path: tuple, idx: int | None, host: np.ndarray):
        sharding = self._sharding(path)
        node = self.tree
        for p in path[:-1]:
            node = node.setdefault(p, {})
        if idx is None:
            node[path[-1]] = jax.make_array_from_callback(host.shape, sharding, lambda i: host[i])
            return
        idx = np.atleast_1d(np.asarray(idx, np.int32))
        layer = jax.make_array_from_callback(host.shape, _layer_sharding(sharding, len(idx)), lambda i: host[i])
        if path[-1] not in node:
            shape = self.shapes[path]
            node[path[-1]] = jax.jit(lambda: jnp.zeros(shape, host.dtype), out_shardings=sharding)()
        node[path[-1]] = self._setter(sharding, len(idx))(node[path[-1]], layer, idx)


def _dtype_name(dtype) -> str:
    name = safetensors_io.np_dtype(dtype).name
    if name not in DTYPES:
        raise ValueError(f"load_pretrained: dtype={dtype!r}, expected one of {DTYPES}")
    return name


FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")


def check_dtypes(reader) -> None:
    """ValueError naming the file and tensor of `reader` (a safetensors_io.DirReader) that is
    not floating point: integer or quantized weights would be cast to garbage."""
    for name in reader.names:
        if reader.dtype(name).name not in FLOAT_DTYPES:
            raise ValueError(f"{reader.entries[name][0]}: tensor {name!r} has dtype {reader.dtype(name).name}, "
                             f"expected a floating point type ({', '.join(FLOAT_DTYPES)}); quantized or integer "
                             f"weights are not supported")


def load_pretrained(path: str, *, mesh=None, dtype=None, rules=None, shardings=None, **config_overrides):
    """(LLaDAConfig, params as jax.Arrays) from a local Hugging Face directory.

    Reads config.json and model.safetensors (or the shards listed in
    model.safetensors.index.json) one tensor at a time and places each on its devices:
    with `mesh`, by the model's logical axes (`rules`, default
    `llada_jax.parallel.sharding.LOGICAL_RULES`), or as an explicit `shardings` tree (our
    parameter structure); with neither, on the default device. A stacked layer
    parameter is filled one layer at a time in place (a donated update).
    dtype: parameter dtype; None keeps the stored one (bfloat16 for the published
      models; float32 if the files mix dtypes). The returned config's param_dtype says
      which. The compute dtype is config.dtype (float32 unless overridden).
    config_overrides: other LLaDAConfig fields, e.g. scan_layers=False, dtype="bfloat16".
    Multi-host: every process calls this with the same arguments; make_array_from_callback
    asks each process only for its addressable shards (each reads the tensor it needs).
    """
    hf_config = layout.read_config(path)
    reader = safetensors_io.DirReader(path)
    check_dtypes(reader)
    if dtype is None and "param_dtype" not in config_overrides:
        stored = {reader.dtype(n).name for n in reader.names}
        dtype = stored.pop() if len(stored) == 1 else "float32"
    if dtype is not None:
        config_overrides["param_dtype"] = _dtype_name(dtype)
    config = layout.config_from_hf(hf_config, os.path.join(path, "config.json"), **config_overrides)
    try:
        layout.check_hf_keys(config, {n: reader.shape(n) for n in reader.names})
    except ValueError as e:  # name the file: the tensor's own, else the first safetensors file
        files = sorted({entry[0] for entry in reader.entries.values()})
        named = [reader.entries[n][0] for n in reader.names if f"{n!r}" in str(e)]
        raise ValueError(f"{(named or files or [path])[0]}: {e} for the {config.family} family") from None
    if shardings is None and mesh is not None:
        shardings = sharding_lib.shardings_of(abstract_params(config), mesh, rules)
    np_dtype = safetensors_io.np_dtype(config.param_dtype)
    builder = TreeBuilder(config, shardings)
    for name, path_, idx, _, from_t in layout.tensor_map(config):
        for leaf_path, host in layout.split(path_, from_t(reader.read(name))):  # fused: several leaves
            host = np.ascontiguousarray(host.astype(np_dtype, copy=False))
            builder.put(leaf_path, idx, host)
            del host  # one host tensor alive at a time
    return config, builder.tree


def is_hf_dir(path: str) -> bool:
    """A Hugging Face model folder (config.json, no run.json): our export, or a published
    model's folder, which a run's `train.init_from` (or a LoRA base) may name directly."""
    return os.path.isfile(os.path.join(path, "config.json")) and not os.path.isfile(os.path.join(path, "run.json"))


def restore_like(path: str, abstract):
    """The params of Hugging Face folder `path` as the ShapeDtypeStructs `abstract` (our
    parameter tree, with shardings) place and type them: read tensor by tensor
    (`load_pretrained`), each leaf cast to its abstract dtype. ValueError naming the first
    leaf whose shape differs from the abstract one."""
    leaves = jax.tree_util.tree_leaves(abstract)
    dtypes = {jnp.dtype(a.dtype).name for a in leaves}
    stacked = any(p and getattr(p[0], "key", None) == "blocks"
                  for p, _ in jax.tree_util.tree_flatten_with_path(abstract)[0])
    _, params = load_pretrained(path, dtype=dtypes.pop() if len(dtypes) == 1 else "float32", scan_layers=stacked,
                                shardings=jax.tree_util.tree_map(lambda a: a.sharding, abstract))
    got = dict(jax.tree_util.tree_flatten_with_path(params)[0])
    for key, want in jax.tree_util.tree_flatten_with_path(abstract)[0]:
        have = got.get(key)
        if have is None or have.shape != want.shape:
            name = jax.tree_util.keystr(key)
            raise ValueError(f"{path}: parameter {name} has shape {None if have is None else have.shape}, "
                             f"expected {want.shape} (this run's model)")
    return jax.tree_util.tree_map(lambda a, x: x if x.dtype == a.dtype else x.astype(a.dtype), abstract, params)


def model_flags(config: LLaDAConfig) -> list[str]:
    """`--config.model.*` flags that give configs/*.py this model's shape."""
    fields = ("family", "d_model", "n_heads", "n_kv_heads", "n_layers", "mlp_hidden_size", "vocab_size",
              "embedding_size", "max_sequence_length", "rope_theta", "rms_norm_eps", "mask_token_id",
              "eos_token_id", "pad_token_id", "weight_tying", "param_dtype")
    knobs = ("qkv_bias", "qk_norm", "attention_head_dim", "partial_rotary_factor", "logit_alignment", "causal",
             "block_size")
    default = LLaDAConfig()  # the knobs only where they differ from LLaDA's
    rope = [] if config.rope_scaling == default.rope_scaling else [
        f"--config.model.rope_scaling.{f.name}={getattr(config.rope_scaling, f.name)}"
        for f in dataclasses.fields(config.rope_scaling)]
    moe = [f"--config.model.moe.{f.name}={getattr(config.moe, f.name)}" for f in dataclasses.fields(config.moe)
           if getattr(config.moe, f.name) != getattr(default.moe, f.name)]  # an MoE family's routing and sizes
    return [f"--config.model.{f}={getattr(config, f)}" for f in fields] + \
        [f"--config.model.{f}={getattr(config, f)}" for f in knobs if getattr(config, f) != getattr(default, f)] + \
        rope + moe


def import_to_workdir(src: str, workdir: str, *, dtype="float32") -> LLaDAConfig:
    """Write the params of HF directory `src` as the step-0 checkpoint of `workdir`, its
    tokenizer files next to it, and run.json (the model config and tokenizer path, as a
    training run writes it) so `llada_jax.export` and the sampler find the shape.
    `workdir` must be new or empty (WorkdirError otherwise); it is locked meanwhile."""
    from llada_jax.checkpoint import workdir as workdir_lib

    if not os.path.isdir(src):
        raise FileNotFoundError(f"--src={src!r}: no such directory; expected a Hugging Face directory")
    # config.json's fields and the tensors' dtypes, before the workdir exists
    layout.config_from_hf(layout.read_config(src), os.path.join(src, "config.json"))
    check_dtypes(safetensors_io.DirReader(src))
    workdir_lib.claim(workdir, "import")
    os.makedirs(workdir, exist_ok=True)
    with workdir_lib.lock(workdir, "import", enabled=jax.process_index() == 0):
        workdir_lib.claim(workdir, "import")  # again under the lock: another import may have just finished
        return _import(src, workdir, dtype)


def _import(src, workdir, dtype):
    from llada_jax.checkpoint import manager, workdir as workdir_lib

    config, params = load_pretrained(src, dtype=dtype)
    ckpt = manager.Checkpointer(manager.checkpoint_dir(workdir), async_save=False)
    try:
        state = {"params": params, "step": jnp.zeros((), jnp.int32), "opt_state": {},
                 "rng": jax.random.key_data(jax.random.key(0))}
        ckpt.save(0, state, {"imported_from": os.path.abspath(src)}, force=True)
        ckpt.wait()
    finally:
        ckpt.close()
    tokenizer = None
    for name in layout.TOKENIZER_FILES:
        if os.path.isfile(os.path.join(src, name)):
            shutil.copyfile(os.path.join(src, name), os.path.join(workdir, name))
            if name in ("tokenizer.json", "tokenizer.model") and tokenizer is None:
                tokenizer = os.path.abspath(os.path.join(workdir, name))
    shutil.copyfile(os.path.join(src, "config.json"), os.path.join(workdir, "hf_config.json"))
    workdir_lib.write_run_info(workdir, "import", config=None, model=dataclasses.asdict(config),
                               tokenizer=tokenizer, imported_from=os.path.abspath(src))
    return config


def define_flags(fv):
    """The flags of `python -m llada_jax.import_hf`, on absl FlagValues `fv`."""
    from absl import flags

    flags.DEFINE_string("src", None, "Hugging Face directory (config.json + safetensors), required", flag_values=fv)
    flags.DEFINE_string("workdir", None, "new (or empty) workdir to create, required", flag_values=fv)
    flags.DEFINE_enum("dtype", "float32", DTYPES,
                      "parameter dtype in the checkpoint (float32: master weights for fine-tuning)", flag_values=fv)


def main(argv=None):
    """`python -m llada_jax.import_hf`, `argv` without the program name (default sys.argv[1:])."""
    from llada_jax import cli

    args = cli.parse(define_flags, argv, __doc__.split("\n\n")[0], required=("src", "workdir"))

    with cli.user_errors():
        config = import_to_workdir(args.src, args.workdir, dtype=args.dtype)
    print(json.dumps({"workdir": os.path.abspath(args.workdir), "step": 0,
                      "flags": " ".join(model_flags(config))}))
