"""Every rule about a run config's values, in one place, checked before anything
expensive runs (no data read, no tokenizer trained, nothing compiled or written). Each
error is a ValueError naming the one field, its value and what was expected.

- `check(config, num_devices, process_count)`: the config on its own and on this set-up:
  known sections and fields, the model shape, the mesh and its sharding-rule overrides,
  the data source and objective, the batch (divisible by the data-parallel size times
  gradient accumulation, and by the process count), the sequence length, the optimizer
  and its schedule, the training and sampling lengths, LoRA, checkpoints. `plan` runs it.
- `check_train(...)`: what `python -m llada_jax.train` runs: `check`, LoRA's base
  (`train.init_from`) and the data paths (`config.paths.check_paths`).
- `check_rl(...)`: what `python -m llada_jax.rl` runs: `check` and the `rl` section.
- `check_tokenizer(config, tokenizer)`: the vocabulary holds the tokenizer's (run time).

The library's constructors (`LLaDAConfig`, `LoRAConfig`, `Checkpointer`, the mesh
functions of `parallel.sharding`, `data.tasks.make_task`, `rl.rewards.parse`) take plain
values; where they check them, the errors name their own arguments, and the rules here
name the config's fields. `--config.x.y` flags naming no field are refused while the
command line is parsed (`llada_jax.commands.flags`).
"""

from __future__ import annotations

import math
import os

from llada_jax import objectives
from llada_jax.config import paths
from llada_jax.config.schema import base_config
from llada_jax.data import tasks
from llada_jax.model import DTYPES, from_config
from llada_jax.parallel import sharding
from llada_jax.rl import rewards
from llada_jax.training import inputs
from llada_jax.training.optimizer import SCHEDULES


def check(config, num_devices: int, process_count: int = 1) -> tuple[int, int, int]:
    """ValueError naming the field for a config that cannot run on `num_devices` devices in
    `process_count` processes. Returns the (data, fsdp, tensor) mesh dims."""
    _known_fields(config)
    dims = check_mesh(config.mesh, num_devices)
    dp = dims[0] * dims[1]
    d, o, t = config.data, config.optim, config.train
    kinds = objectives.training_kinds()
    if d.kind not in kinds:
        raise ValueError(f"config.data.kind={d.kind!r}: expected one of {kinds}")
    _data_source(d)
    if o.grad_accum < 1:
        raise ValueError(f"config.optim.grad_accum={o.grad_accum}: expected >= 1")
    if d.batch_size < 1 or d.batch_size % (dp * o.grad_accum):
        raise ValueError(f"config.data.batch_size={d.batch_size}: expected a multiple of the data-parallel size "
                         f"(mesh data x fsdp = {dp}) times optim.grad_accum={o.grad_accum}")
    if d.batch_size % process_count:
        raise ValueError(f"config.data.batch_size={d.batch_size}: expected a multiple of the process count "
                         f"{process_count}")
    if not 1 <= d.seq_len <= config.model.max_sequence_length:
        raise ValueError(f"config.data.seq_len={d.seq_len}: expected 1..max_sequence_length="
                         f"{config.model.max_sequence_length}")
    if not 0.0 <= d.random_length_prob <= 1.0:
        raise ValueError(f"config.data.random_length_prob={d.random_length_prob}: expected in [0, 1]")
    if t.steps < 1:
        raise ValueError(f"config.train.steps={t.steps}: expected >= 1")
    if t.log_every < 1:
        raise ValueError(f"config.train.log_every={t.log_every}: expected >= 1")
    _optim(o, t.steps)
    if t.num_samples and not 1 <= t.sample_steps <= t.sample_gen_length:
        raise ValueError(f"config.train.sample_steps={t.sample_steps}: expected 1..sample_gen_length="
                         f"{t.sample_gen_length}")
    _lora(config.lora)
    _model(config)
    _checkpoint(config.checkpoint)
    return dims


def check_train(config, num_devices: int, process_count: int = 1) -> tuple[int, int, int]:
    """`check`, plus what a training run needs beyond it: a LoRA run fine-tunes a base,
    named by train.init_from; the data paths exist."""
    dims = check(config, num_devices, process_count)
    if config.lora.rank and not config.train.init_from:
        raise ValueError(f"config.lora.rank={config.lora.rank}: LoRA fine-tunes a model; expected "
                         "config.train.init_from=WORKDIR (a training or import_hf workdir) for the base")
    _lora_base("config.train.init_from", config.train.init_from, config.lora.rank)
    paths.check_paths(config)
    return dims


def check_rl(config, num_devices: int, process_count: int = 1) -> tuple[int, int, int]:
    """`check` for the shared sections, then the rl section."""
    dims = check(config, num_devices, process_count)
    r, d = config.rl, config.data
    algorithms = objectives.rl_algorithms()
    if r.algorithm not in algorithms:
        raise ValueError(f"config.rl.algorithm={r.algorithm!r}: expected one of {algorithms}")
    if not r.init_from:
        raise ValueError("config.rl.init_from is empty: expected the SFT workdir to start from "
                         "(--config.rl.init_from=SFT_WORKDIR)")
    if not os.path.isdir(r.init_from):
        raise ValueError(f"config.rl.init_from={r.init_from!r}: no such directory (expected an SFT workdir)")
    if config.train.init_from:
        raise ValueError("config.train.init_from is set: an RL run starts from config.rl.init_from only")
    _lora_base("config.rl.init_from", r.init_from, config.lora.rank)
    if r.algorithm == "grpo":
        if d.source != "synthetic":
            raise ValueError(f"config.data.source={d.source!r}: GRPO's prompts come from a checkable task; "
                             "expected 'synthetic'")
        named("config.rl.rewards", rewards.parse, r.rewards)
        for name, ok, expected in (("num_generations", r.num_generations >= 2, ">= 2 (a group)"),
                                   ("num_iterations", r.num_iterations >= 1, ">= 1"),
                                   ("p_mask_prompt", 0 <= r.p_mask_prompt < 1, "in [0, 1)"),
                                   ("epsilon", r.epsilon > 0, "> 0"), ("beta", r.beta >= 0, ">= 0"),
                                   ("sampler_steps", r.sampler_steps >= 1, ">= 1"),
                                   ("gen_length", r.gen_length >= 1, ">= 1")):
            if not ok:
                raise ValueError(f"config.rl.{name}={r[name]}: expected {expected}")
    else:
        if not r.pairs or not os.path.isfile(r.pairs):
            raise ValueError(f"config.rl.pairs={r.pairs!r}: expected a preference-pair JSONL file for VRPO")
        if r.vrpo_n < 1:
            raise ValueError(f"config.rl.vrpo_n={r.vrpo_n}: expected >= 1")
        if r.beta <= 0:
            raise ValueError(f"config.rl.beta={r.beta}: expected > 0 for VRPO")
    return dims


def check_tokenizer(config, tokenizer) -> None:
    if tokenizer is not None and tokenizer.vocab_size > config.model.vocab_size:
        raise ValueError(f"config.model.vocab_size={config.model.vocab_size}: expected >= the tokenizer's "
                         f"{tokenizer.vocab_size}")


def _lora_base(field: str, workdir: str, rank: int) -> None:
    """A LoRA run's base is a plain workdir (not itself a LoRA run, whose base is elsewhere)."""
    from llada_jax.checkpoint.load import base_reference

    if rank and workdir and os.path.isdir(workdir) and base_reference(workdir) is not None:
        raise ValueError(f"{field}={workdir!r} is itself a LoRA run; export it merged "
                         "(python -m llada_jax.export) and import_hf that as the base")


def named(prefix: str, fn, *args):
    """fn(*args), its ValueError about an argument (`Name.arg=...` or `arg=...`) renamed
    to the config field `prefix`(.arg)."""
    try:
        return fn(*args)
    except ValueError as e:
        msg = str(e)
        head, sep, rest = msg.partition("=")
        if sep and " " not in head:
            field = head.rsplit(".", 1)[-1]
            msg = f"{prefix}{'' if prefix.endswith(field) else '.' + field}={rest}"
        raise ValueError(msg) from None


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


def check_mesh(m, num_devices: int) -> tuple[int, int, int]:
    sizes = {a: m[a] for a in sharding.MESH_AXES}
    for a, s in sizes.items():
        if not isinstance(s, int) or s == 0 or s < -1:
            raise ValueError(f"config.mesh.{a}={s}: expected a positive size or -1 (the rest of the devices)")
    free = [a for a, s in sizes.items() if s == -1]
    if len(free) > 1:
        raise ValueError(f"config.mesh: {', '.join('mesh.' + a for a in free)} are all -1; "
                         "expected at most one axis of size -1")
    fixed = math.prod(s for s in sizes.values() if s != -1)
    if free and num_devices % fixed:
        raise ValueError(f"config.mesh.{free[0]}=-1: the other axes multiply to {fixed}, "
                         f"which does not divide the device count {num_devices}")
    if not free and fixed != num_devices:
        raise ValueError(f"config.mesh=(data={sizes['data']}, fsdp={sizes['fsdp']}, tensor={sizes['tensor']}) "
                         f"has {fixed} devices, expected the device count {num_devices}")
    logical = dict(sharding.LOGICAL_RULES)
    for pair in tuple(m.get("rules", ()) or ()):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2 or pair[0] not in logical:
            raise ValueError(f"config.mesh.rules: {pair!r}: expected a (logical axis, mesh axes) pair with "
                             f"a logical axis among {tuple(logical)}")
        axes = tuple(pair[1]) if isinstance(pair[1], (tuple, list)) else (pair[1],)
        if any(a not in sharding.MESH_AXES for a in axes if a is not None):
            raise ValueError(f"config.mesh.rules: {pair!r}: expected mesh axes among {sharding.MESH_AXES} or None")
    return sharding.mesh_shape(m, num_devices)


def _data_source(d) -> None:
    if d.source not in inputs.SOURCES:
        raise ValueError(f"config.data.source={d.source!r}: expected one of {inputs.SOURCES}")
    if d.kind == "sft" and d.source not in ("jsonl", "prepared", "synthetic"):
        raise ValueError(f"config.data.source={d.source!r}: SFT expects 'jsonl' or 'prepared' (or 'synthetic')")
    if d.source == "synthetic" and d.task not in tasks.TASKS:
        raise ValueError(f"config.data.task={d.task!r}: expected one of {tasks.TASKS}")
    if d.max_bytes < 0:
        raise ValueError(f"config.data.max_bytes={d.max_bytes}: expected >= 0 (0: all of the text)")


def _optim(o, steps: int) -> None:
    if o.schedule not in SCHEDULES:
        raise ValueError(f"config.optim.schedule={o.schedule!r}: expected one of {SCHEDULES}")
    if o.lr <= 0:
        raise ValueError(f"config.optim.lr={o.lr}: expected > 0")
    if o.warmup_steps < 0:
        raise ValueError(f"config.optim.warmup_steps={o.warmup_steps}: expected >= 0")
    if not 0 <= o.decay_steps <= steps:
        raise ValueError(f"config.optim.decay_steps={o.decay_steps}: expected 0..train.steps={steps} "
                         "(the final decay lies within the run)")


def _model(config) -> None:
    """The model shape's own rules are LLaDAConfig's (and LoRAConfig's); named here as the
    config.model (config.lora) fields."""
    named("config.model", from_config.model_config, config, None)


def _lora(lc) -> None:
    from llada_jax.model.adapters import lora

    named("config.lora", lora.from_config, lc)
    if lc.base_dtype not in DTYPES:
        raise ValueError(f"config.lora.base_dtype={lc.base_dtype!r}: expected one of {DTYPES}")


def _checkpoint(c) -> None:
    if c.every < 0:
        raise ValueError(f"config.checkpoint.every={c.every}: expected >= 0 (0: only at the end)")
    if c.keep < 1:
        raise ValueError(f"config.checkpoint.keep={c.keep}: expected >= 1")
