"""The device mesh (data, fsdp, [expert,] tensor) and the one table of logical-axis rules.

Every parameter and activation of `llada_jax.model` carries logical axis names;
`LOGICAL_RULES` (MaxText style) maps them onto mesh axes, and `config.mesh.rules`
overrides entries by name (`rules_of`):
- the batch is split over data x fsdp (both are data parallel);
- weights are split over fsdp on their embed dimension (ZeRO-3 / FSDP: gathered per
  layer inside the step) and over tensor on heads / mlp / vocab (Megatron style);
- MoE experts are split over expert (expert parallelism; `llada_jax.model.moe`), which is
  also a data-parallel axis for the batch. The mesh has an expert axis only when
  config.mesh.expert > 1; rules naming an axis the mesh lacks read as unsplit there.
Parameters and optimizer state are created already sharded (`shardings_of` gives the
jit `out_shardings`); host batches become global arrays with `global_batch`.
"""

from __future__ import annotations

import math
from typing import Mapping

import flax.linen as nn
import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ("data", "fsdp", "expert", "tensor")
BATCH_AXES = ("data", "fsdp", "expert")

LOGICAL_RULES = (
    ("activation_batch", BATCH_AXES),
    ("activation_length", None),
    ("activation_embed", "tensor"),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("mlp", "tensor"),
    ("layers", None),
    ("norm", None),
    ("lora_rank", None),  # LoRA adapters: split like the weight they adapt, the small rank replicated
    ("expert", "expert"),  # MoE expert weights: expert parallelism
)


def rules_of(mesh_cfg: Mapping) -> tuple:
    """LOGICAL_RULES with the pairs of `mesh_cfg["rules"]` (logical axis, mesh axes: None,
    one axis or a tuple of axes) replacing the entries of the same logical axis."""
    table = dict(LOGICAL_RULES)
    for pair in tuple(mesh_cfg.get("rules", ()) or ()):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2 or pair[0] not in table:
            raise ValueError(f"rules: {pair!r}: expected a (logical axis, mesh axes) pair with "
                             f"a logical axis among {tuple(table)}")
        axes = tuple(pair[1]) if isinstance(pair[1], (tuple, list)) else pair[1]
        if any(a not in MESH_AXES for a in (axes if isinstance(axes, tuple) else (axes,)) if a is not None):
            raise ValueError(f"rules: {pair!r}: expected mesh axes among {MESH_AXES} or None")
        table[pair[0]] = axes
    return tuple(table.items())


def mesh_axes(mesh_cfg: Mapping[str, int]) -> tuple[str, ...]:
    """The mesh axes of a config: (data, fsdp, tensor), with expert before tensor when
    mesh.expert is given and not 1."""
    return tuple(a for a in MESH_AXES if a != "expert" or int(mesh_cfg.get("expert", 1) or 1) != 1)


def mesh_shape(mesh_cfg: Mapping[str, int], num_devices: int) -> tuple[int, ...]:
    """The sizes of `mesh_axes(mesh_cfg)` ((data, fsdp, tensor) or (data, fsdp, expert,
    tensor)) over `num_devices`; at most one axis may be -1 (the rest of the devices)."""
    sizes = {a: int(mesh_cfg[a]) for a in mesh_axes(mesh_cfg)}
    free = [a for a, s in sizes.items() if s == -1]
    for a, s in sizes.items():
        if s == 0 or s < -1:
            raise ValueError(f"{a}={s}: expected a positive size or -1 (the rest of the devices)")
    if len(free) > 1:
        raise ValueError(f"{', '.join(free)} are all -1: expected at most one axis of size -1")
    fixed = math.prod(s for s in sizes.values() if s != -1)
    if free:
        if num_devices % fixed:
            raise ValueError(f"{free[0]}=-1: the other axes multiply to {fixed}, "
                             f"which does not divide the device count {num_devices}")
        sizes[free[0]] = num_devices // fixed
    elif fixed != num_devices:
        raise ValueError(f"({', '.join(f'{a}={s}' for a, s in sizes.items())}) has {fixed} devices, "
                         f"expected the device count {num_devices}")
    return tuple(sizes.values())


def make_mesh(mesh_cfg: Mapping[str, int], devices=None) -> Mesh:
    """A Mesh with axes `mesh_axes(mesh_cfg)` over `devices` (default: all devices)."""
    devices = list(jax.devices() if devices is None else devices)
    shape = mesh_shape(mesh_cfg, len(devices))
    try:  # topology-aware order on TPU/GPU pods
        grid = mesh_utils.create_device_mesh(shape, devices, allow_split_physical_axes=True)
    except (AssertionError, ValueError, NotImplementedError):
        grid = np.asarray(devices, dtype=object).reshape(shape)
    return Mesh(grid, mesh_axes(mesh_cfg))


def batch_axes(mesh) -> tuple[str, ...]:
    """The axes of BATCH_AXES that `mesh` (a Mesh or an abstract mesh) has."""
    return tuple(a for a in BATCH_AXES if a in mesh.axis_names)


def data_parallel_size(mesh: Mesh) -> int:
    return math.prod(mesh.shape[a] for a in batch_axes(mesh))


def for_mesh(rules, axis_names) -> tuple:
    """`rules` with the mesh axes that `axis_names` lacks removed (an absent expert axis)."""
    def keep(axes):
        if isinstance(axes, (tuple, list)):
            kept = tuple(a for a in axes if a in axis_names)
            return kept or None
        return axes if axes is None or axes in axis_names else None
    return tuple((name, keep(axes)) for name, axes in rules)


def shardings_of(boxed_tree, mesh: Mesh, rules=None):
    """NamedShardings for a tree whose leaves may be `nn.Partitioned` (logical names),
    mapped by `rules` (default LOGICAL_RULES); plain leaves are replicated. The result's
    structure is that of the unboxed tree."""
    specs = nn.get_partition_spec(boxed_tree)
    return nn.logical_to_mesh_sharding(specs, mesh, for_mesh(LOGICAL_RULES if rules is None else rules,
                                                             mesh.axis_names))


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
    """Rows over data x fsdp (x expert); the other dimensions replicated."""
    return NamedSharding(mesh, P(batch_axes(mesh), *([None] * (ndim - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def global_batch(local_batch: Mapping[str, np.ndarray], mesh: Mesh, global_batch_size: int) -> dict:
    """Assemble this process's rows into global arrays sharded over data x fsdp.

    `local_batch` holds rows [process_index * b, (process_index + 1) * b) of the global
    batch, b = global_batch_size / process_count.
    """
    out = {}
    for name, value in local_batch.items():
        value = np.asarray(value)
        shape = (global_batch_size,) + value.shape[1:]
        out[name] = jax.make_array_from_process_local_data(batch_sharding(mesh, value.ndim), value, shape)
    return out


def logical_rules_context(rules=None):
    """Context in which `nn.with_logical_constraint` inside the model resolves (by `rules`,
    default LOGICAL_RULES), for the mesh set by `jax.set_mesh` (entered first)."""
    rules = LOGICAL_RULES if rules is None else rules
    mesh = jax.sharding.get_abstract_mesh()
    return nn.logical_axis_rules(rules if mesh.empty else for_mesh(rules, mesh.axis_names))
