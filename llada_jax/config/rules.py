"""Every rule about a run config's fields, checked before anything expensive runs (no data
read, no tokenizer trained, nothing compiled, restored or written). Each error is a
ValueError naming the field, the value and what was expected.

- `train_config(config, num_devices, process_count)`: the config on its own and on this
  set-up: known sections and fields, the mesh and its sharding-rule overrides, the data
  source, task and objective, the batch (divisible by the data-parallel size times gradient
  accumulation, and by the process count), the sequence length, the optimizer and its
  schedule, the training and sampling lengths, block diffusion's sizes, LoRA, checkpoints.
  `python -m llada_jax.plan` calls it (through `training.run.build_run`).
- `train_run(config, num_devices, process_count)`: what a `python -m llada_jax.train` run
  checks once: `train_config`, plus LoRA's base (`train.init_from`) and the data paths it
  reads (`check_paths`; not part of `train_config`, since `plan` checks configs on
  machines without the data).
- The RL run's `rl` section: `llada_jax.config.rules_rl`.

The library functions these fields reach (`sharding.rules_of`, `lora.LoRAConfig`,
`manager.Checkpointer`, `tasks.make_task`) take plain values and check only those values.
Checked elsewhere, and why: `cli.check_overrides` refuses an unknown `--config.x.y` flag while
the command line is parsed; the values inherited from a base (`training.inherit`) and the
tokenizer's vocabulary (`model.from_config`) are known only after they are read;
`LLaDAConfig` checks the model shape.
"""

from __future__ import annotations

import math
import os

from llada_jax import objectives
from llada_jax.checkpoint import load
from llada_jax.config.schema import base_config, with_model_defaults
from llada_jax.data import prepared, tasks
from llada_jax.model import DTYPES
from llada_jax.model.adapters import lora
from llada_jax.parallel import sharding
from llada_jax.training import optimizer

SOURCES = ("stdlib", "files", "jsonl", "prepared", "synthetic")


def train_config(config, num_devices: int, process_count: int = 1) -> tuple[int, int]:
    """ValueError naming the field for a config that cannot run on `num_devices` devices in
    `process_count` processes. Returns the mesh dims. Unset model fields are checked at their
    MODEL_DEFAULTS (a training run has inherited them first)."""
    known_fields(config)
    config = with_model_defaults(config)
    dp_mesh = mesh_dims(config.mesh, num_devices)
    mesh_rules(config.mesh)
    dp = math.prod(s for a, s in zip(sharding.mesh_axes(config.mesh), dp_mesh) if a in sharding.BATCH_AXES)
    d, o, t = config.data, config.optim, config.train
    kinds = objectives.training_kinds(causal=bool(config.model.causal))
    if d.kind not in kinds:
        raise ValueError(f"config.data.kind={d.kind!r}: expected one of {kinds}"
                         + (" (config.model.causal=True: a causal model)" if config.model.causal else ""))
    block_settings(config)
    _data_source(d)
    if o.grad_accum < 1:
        raise ValueError(f"config.optim.grad_accum={o.grad_accum}: expected >= 1")
    if d.batch_size < 1 or d.batch_size % (dp * o.grad_accum):
        raise ValueError(f"config.data.batch_size={d.batch_size}: expected a multiple of the data-parallel size "
                         f"(mesh data x fsdp x expert = {dp}) times optim.grad_accum={o.grad_accum}")
    if d.batch_size % process_count:
        raise ValueError(f"config.data.batch_size={d.batch_size}: expected a multiple of the process count "
                         f"{process_count}")
    if not 1 <= d.seq_len <= config.model.max_sequence_length:
        raise ValueError(f"config.data.seq_len={d.seq_len}: expected 1..max_sequence_length="
                         f"{config.model.max_sequence_length}")
    if not 0.0 <= d.random_length_prob <= 1.0:
        raise ValueError(f"config.data.random_length_prob={d.random_length_prob}: expected in [0, 1]")
    if isinstance(t.steps, bool) or not isinstance(t.steps, int) or t.steps < 1:
        raise ValueError(f"config.train.steps={t.steps}: expected an integer >= 1")
    bad = [f"{k}={v}" for k, v in o.items() if isinstance(v, float) and not math.isfinite(v)]
    if bad:
        raise ValueError(f"config.optim.{bad[0]}: expected a finite number")
    _tensor_divides(config)
    if o.schedule not in optimizer.SCHEDULES:
        raise ValueError(f"config.optim.schedule={o.schedule!r}: expected one of {optimizer.SCHEDULES}")
    if t.log_every < 1:
        raise ValueError(f"config.train.log_every={t.log_every}: expected >= 1")
    if o.lr <= 0:
        raise ValueError(f"config.optim.lr={o.lr}: expected > 0")
    if o.warmup_steps < 0:
        raise ValueError(f"config.optim.warmup_steps={o.warmup_steps}: expected >= 0")
    if not 0 <= o.decay_steps <= t.steps:
        raise ValueError(f"config.optim.decay_steps={o.decay_steps}: expected 0..config.train.steps={t.steps} "
                         f"(a shorter run: set --config.optim.decay_steps too)")
    if t.num_samples and not 1 <= t.sample_steps <= t.sample_gen_length:
        raise ValueError(f"config.train.sample_steps={t.sample_steps}: expected 1..sample_gen_length="
                         f"{t.sample_gen_length}")
    lora_section(config.lora)
    checkpoint_section(config.checkpoint)
    return dp_mesh


def train_run(config, num_devices: int, process_count: int = 1) -> tuple[int, int]:
    """`train_config`, plus what a `python -m llada_jax.train` run needs beyond it: a LoRA
    run fine-tunes a base, named by train.init_from; the data paths exist."""
    dp_mesh = train_config(config, num_devices, process_count)
    if config.lora.rank and not config.train.init_from:
        raise ValueError(f"config.lora.rank={config.lora.rank}: LoRA fine-tunes a model; expected "
                         "config.train.init_from=WORKDIR (a training or import_hf workdir) for the base")
    if config.train.init_from:
        load.check_not_lora(config.train.init_from)
    check_paths(config)
    return dp_mesh


def known_fields(config) -> None:
    """Every section and field is one of base_config()'s (a config built in Python, not
    through the command line, can hold a misspelt field)."""
    schema = base_config()
    for section, fields in config.items():
        if section not in schema:
            raise ValueError(f"config.{section}: unknown section, expected one of {sorted(schema)}")
        for k in fields:
            if k not in schema[section]:
                raise ValueError(f"config.{section}.{k}: unknown field")


def mesh_dims(mesh, num_devices: int) -> tuple[int, ...]:
    """config.mesh's axis sizes on `num_devices` devices (`sharding.mesh_shape`), its
    errors naming config.mesh."""
    try:
        return sharding.mesh_shape(mesh, num_devices)
    except ValueError as e:
        raise ValueError(f"config.mesh: {e}") from None


def mesh_rules(mesh) -> tuple:
    """The logical-axis rules of config.mesh (`sharding.rules_of`); ValueError naming
    config.mesh.rules for a pair that is not (a known logical axis, mesh axes or None)."""
    try:
        return sharding.rules_of(mesh)
    except ValueError as e:  # sharding's message starts "rules: ": the field, named in full
        raise ValueError(f"config.mesh.{e}") from None


def _tensor_divides(config) -> None:
    """The tensor-parallel size divides what it shards: the query and key/value heads and
    the MLP width (an explicit config.mesh.tensor; -1 is resolved by the mesh)."""
    tp, m = config.mesh.tensor, config.model
    for field in ("n_heads", "n_kv_heads", "mlp_hidden_size"):
        if tp > 1 and m[field] > 0 and m[field] % tp:
            raise ValueError(f"config.mesh.tensor={tp}: expected a divisor of config.model.{field}={m[field]} "
                             f"(tensor parallelism splits it evenly)")


def _data_source(d) -> None:
    if d.source not in SOURCES:
        raise ValueError(f"config.data.source={d.source!r}: expected one of {SOURCES}")
    if objectives.data_kind(d.kind) == "sft" and d.source not in ("jsonl", "prepared", "synthetic"):
        raise ValueError(f"config.data.source={d.source!r}: SFT expects 'jsonl' or 'prepared' (or 'synthetic')")
    if d.max_bytes < 0:
        raise ValueError(f"config.data.max_bytes={d.max_bytes}: expected >= 0 (0: all of the text)")
    if d.source == "synthetic" and d.task not in tasks.TASKS:
        raise ValueError(f"config.data.task={d.task!r}: expected one of {tasks.TASKS}")


def block_settings(config) -> tuple[int, tuple]:
    """(block size, warm-up stages) of a run: block-diffusion kinds train the model's
    `model.block_size`, after `train.block_warmup` ("4:100,16:300": block 4 for steps
    0-99, 16 until step 299, then the model's; LLaDA 2.x / Fast-dLLM v2 conversion of
    a `train.init_from` checkpoint). ValueError for a size that does not divide the
    sequence length, a block kind without a block-causal model, or a warm-up without one."""
    d, bs = config.data, config.model.get("block_size", 0) or 0
    blocks = objectives.get(d.kind).blocks
    if blocks and bs < 1:
        raise ValueError(f"config.data.kind={d.kind!r} trains a block-causal model: expected "
                         f"config.model.block_size >= 1, got {bs}")
    if bs and not blocks:
        raise ValueError(f"config.model.block_size={bs}: a block-causal model trains with data.kind "
                         f"'block_diffusion' or 'block_sft', not {d.kind!r}")
    text = config.train.get("block_warmup", "")
    stages = []
    for part in [p for p in text.split(",") if p.strip()]:
        try:
            size, until = (int(x) for x in part.split(":"))
        except ValueError:
            raise ValueError(f"config.train.block_warmup={text!r}: expected 'SIZE:UNTIL_STEP,...'") from None
        if stages and until <= stages[-1][1] or until < 1 or size < 1:
            raise ValueError(f"config.train.block_warmup={text!r}: expected sizes >= 1 and increasing steps")
        stages.append((size, until))
    if stages and not blocks:
        raise ValueError(f"config.train.block_warmup={text!r}: only for block-diffusion kinds, not {d.kind!r}")
    for size in [bs] + [s for s, _ in stages] if blocks else []:
        if d.seq_len % size:
            raise ValueError(f"block size {size} (config.model.block_size / train.block_warmup) must divide "
                             f"config.data.seq_len={d.seq_len}")
    return bs, tuple(stages)


def lora_section(lc) -> None:
    """config.lora: rank, alpha, dropout, targets (as `lora.parse_targets` reads them) and
    the frozen base's dtype."""
    if isinstance(lc.rank, bool) or not isinstance(lc.rank, int) or lc.rank < 0:
        raise ValueError(f"config.lora.rank={lc.rank!r}: expected an integer >= 0 (0: no LoRA)")
    if not lc.alpha > 0:
        raise ValueError(f"config.lora.alpha={lc.alpha!r}: expected > 0")
    if not 0.0 <= lc.dropout < 1.0:
        raise ValueError(f"config.lora.dropout={lc.dropout!r}: expected in [0, 1)")
    targets = lora.parse_targets(lc.targets)
    if any(t not in lora.TARGETS for t in targets) or (lc.rank and not targets):
        raise ValueError(f"config.lora.targets={','.join(targets)!r}: expected a non-empty "
                         f"comma-separated subset of {','.join(lora.TARGETS)} (or 'all')")
    if lc.base_dtype not in DTYPES:
        raise ValueError(f"config.lora.base_dtype={lc.base_dtype!r}: expected one of {DTYPES}")


def checkpoint_section(ck) -> None:
    if ck.every < 0:
        raise ValueError(f"config.checkpoint.every={ck.every}: expected >= 0 (0: only at the end)")
    if ck.keep < 1:
        raise ValueError(f"config.checkpoint.keep={ck.keep}: expected >= 1")


def check_paths(config) -> None:
    """ValueError naming the field, the value and what was expected for each data path a run
    of `config` reads (the tokenizer file, the text or JSONL files, a prepared directory's
    index; the held-out ones only when the run evaluates). `train_run` calls it before
    anything is read. Not part of `train_config`: `plan` checks configs on machines without
    the data."""
    d = config.data
    evaluating = evaluates(config)
    if d.tokenizer and not os.path.exists(d.tokenizer):
        raise ValueError(f"config.data.tokenizer={d.tokenizer!r}: no such file or directory (expected a "
                         "tokenizer .model, tokenizer.json or a directory holding one)")
    if d.source == "files":
        text_files(d.train_files, "train_files")
        if evaluating:
            text_files(d.eval_files, "eval_files")
    elif d.source == "jsonl":
        jsonl_file(d.train_jsonl, "train_jsonl")
        if d.eval_jsonl:
            jsonl_file(d.eval_jsonl, "eval_jsonl")
    elif d.source == "prepared":
        prepared_dir(d.path, "path")
        if evaluating:
            prepared_dir(d.eval_path, "eval_path")


def evaluates(config) -> bool:
    """The run evaluates on held-out data (train.eval_every and train.eval_batches)."""
    return bool(config.train.eval_every and config.train.eval_batches)


def text_files(spec: str, field: str) -> list[str]:
    """The files of config.data.`field` (comma-separated), each existing."""
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
    if not path:
        why = ("; evaluation (train.eval_every) needs prepared held-out data: prepare it, or set "
               "config.train.eval_every=0") if field == "eval_path" else ""
        raise ValueError(f"config.data.{field} is empty: expected a directory made by "
                         f"`python -m llada_jax.prepare_data` (source 'prepared'){why}")
    prepared.read_index(path, field=f"config.data.{field}")
    return path
