"""Every rule of a training config, in one place, checked before anything expensive runs
(no data read, no tokenizer trained, nothing compiled or written).

- `train_config(config, num_devices, process_count)`: the config on its own and on this
  set-up: known sections and fields, the mesh and its sharding-rule overrides, the data
  source and objective, the batch (divisible by the data-parallel size times gradient
  accumulation, and by the process count), the sequence length, the optimizer and its
  schedule, the training and sampling lengths, LoRA. `python -m llada_jax.plan` calls it,
  and so does every run below.
- `train_run(config, num_devices, process_count)`: what `python -m llada_jax.train`
  (`training.loop.train_and_evaluate`) calls once: `train_config`, plus what a run needs
  beyond the config's shape (LoRA's base, `train.init_from`) and the data paths it reads
  (`training.inputs.check_paths`: the files exist, a prepared directory has its index).
- The RL run (`llada_jax.rl.loop.validate`) calls `train_config` for these shared sections
  and adds the rules of its own `rl` section.

What is checked elsewhere, and why: `llada_jax.cli.check_overrides` refuses an unknown
`--config.x.y` flag while the command line is parsed (before absl would report it as an
unknown flag); the data paths are checked by `train_run` only, not `train_config`, since
`plan` validates configs on machines without the data (their checks live in
`training.inputs.check_paths`, which the readers there call too); the model shape's own
rules are `model.LLaDAConfig`'s, and the LoRA fields' `lora.from_config`.
Each error is a ValueError naming the field, the value and what was expected.
"""

from __future__ import annotations

import math

from llada_jax import objectives
from llada_jax.checkpoint import load
from llada_jax.config import base_config, with_model_defaults
from llada_jax.model import DTYPES
from llada_jax.model.adapters import lora
from llada_jax.parallel import sharding
from llada_jax.training import inputs
from llada_jax.training import optimizer, step


def train_config(config, num_devices: int, process_count: int = 1) -> tuple[int, int]:
    """ValueError naming the field for a config that cannot run on `num_devices` devices in
    `process_count` processes. Returns the (data, fsdp) mesh dims. Unset model fields are
    checked at their MODEL_DEFAULTS (a training run has inherited them first)."""
    _known_fields(config)
    config = with_model_defaults(config)
    dp_mesh = sharding.mesh_shape(config.mesh, num_devices)
    sharding.rules_of(config.mesh)  # ValueError for a bad override
    dp = math.prod(s for a, s in zip(sharding.mesh_axes(config.mesh), dp_mesh) if a in sharding.BATCH_AXES)
    d, o, t = config.data, config.optim, config.train
    kinds = objectives.training_kinds()
    if d.kind not in kinds:
        raise ValueError(f"config.data.kind={d.kind!r}: expected one of {kinds}")
    step.block_settings(config)  # ValueError for a block size or warm-up that cannot run
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
    for name, value in (("steps", t.steps), ("log_every", t.log_every)):
        if value < 1:
            raise ValueError(f"config.train.{name}={value}: expected >= 1")
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
    _lora(config.lora)
    return dp_mesh


def _tensor_divides(config) -> None:
    """The tensor-parallel size divides what it shards: the query and key/value heads and
    the MLP width (an explicit config.mesh.tensor; -1 is resolved by the mesh)."""
    tp, m = config.mesh.tensor, config.model
    for field in ("n_heads", "n_kv_heads", "mlp_hidden_size"):
        if tp > 1 and m[field] > 0 and m[field] % tp:
            raise ValueError(f"config.mesh.tensor={tp}: expected a divisor of config.model.{field}={m[field]} "
                             f"(tensor parallelism splits it evenly)")


def train_run(config, num_devices: int, process_count: int = 1) -> tuple[int, int]:
    """`train_config`, plus what a `python -m llada_jax.train` run needs beyond it: a LoRA
    run fine-tunes a base, named by train.init_from."""
    dp_mesh = train_config(config, num_devices, process_count)
    if config.lora.rank and not config.train.init_from:
        raise ValueError(f"config.lora.rank={config.lora.rank}: LoRA fine-tunes a model; expected "
                         "config.train.init_from=WORKDIR (a training or import_hf workdir) for the base")
    if config.train.init_from:
        load.check_not_lora(config.train.init_from)
    inputs.check_paths(config)
    return dp_mesh


def _known_fields(config) -> None:
    """Every section and field is one of base_config()'s (a config built in Python, not
    through the command line, can hold a misspelt field)."""
    schema = base_config()
    for section, fields in config.items():
        if section not in schema:
            raise ValueError(f"config.{section}: unknown section, expected one of {sorted(schema)}")
        for k in fields:
            if k not in schema[section]:
                raise ValueError(f"config.{section}.{k}: unknown field")


def _data_source(d) -> None:
    if d.source not in inputs.SOURCES:
        raise ValueError(f"config.data.source={d.source!r}: expected one of {inputs.SOURCES}")
    if objectives.data_kind(d.kind) == "sft" and d.source not in ("jsonl", "prepared", "synthetic"):
        raise ValueError(f"config.data.source={d.source!r}: SFT expects 'jsonl' or 'prepared' (or 'synthetic')")
    if d.max_bytes < 0:
        raise ValueError(f"config.data.max_bytes={d.max_bytes}: expected >= 0 (0: all of the text)")


def _lora(lc) -> None:
    lora.from_config(lc)  # rank, alpha, dropout, targets
    if lc.base_dtype not in DTYPES:
        raise ValueError(f"config.lora.base_dtype={lc.base_dtype!r}: expected one of {DTYPES}")
