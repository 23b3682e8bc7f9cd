"""LoRA adapters (Hu et al. 2021) on the Block projections, with PEFT's definitions.

    y = x W + (alpha / rank) * dropout(x) A B

A: (in..., rank), initialised as PEFT does (kaiming-uniform, bound 1/sqrt(fan_in));
B: (rank, out...), zero, so a fresh adapter leaves the logits exactly unchanged. A and B
are float32 parameters named `<weight>_lora_a` / `<weight>_lora_b` next to the weight
they adapt (so they are stacked by `nn.scan` and sharded by the weight's logical axes;
the rank axis is replicated). `llada_jax.model.projection`, through which every Block
projection goes, calls `adapter`: the adapter math is this one function, not a second
copy of the model.

This module knows only jax/flax (the model imports it); training-side helpers that need
the rest of the project (restoring a LoRA workdir, merging) are in `llada_jax.checkpoint.load`,
the PEFT export in `llada_jax.export`.
"""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

# The Block projections, with the published (and our PyTorch model's) module names:
# attention q, k, v, out; MLP gate (ff_proj), up, down (ff_out).
TARGETS = ("q_proj", "k_proj", "v_proj", "attn_out", "ff_proj", "up_proj", "ff_out")
LORA_RANK = "lora_rank"  # logical axis of the rank dimension (small: replicated)
SUFFIX_A, SUFFIX_B = "_lora_a", "_lora_b"


@dataclasses.dataclass(frozen=True)
class LoRAConfig:
    """rank 0: no adapters (the default). targets: a subset of TARGETS."""

    rank: int = 0
    alpha: float = 16.0
    dropout: float = 0.0
    targets: tuple = TARGETS

    def __post_init__(self):
        object.__setattr__(self, "targets", tuple(self.targets))  # a list, from run.json
        if not isinstance(self.rank, int) or self.rank < 0:
            raise ValueError(f"LoRAConfig.rank={self.rank!r}: expected an integer >= 0 (0: no LoRA)")
        if not self.alpha > 0:
            raise ValueError(f"LoRAConfig.alpha={self.alpha!r}: expected > 0")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoRAConfig.dropout={self.dropout!r}: expected in [0, 1)")
        bad = [t for t in self.targets if t not in TARGETS]
        if bad or (self.rank and not self.targets):
            raise ValueError(f"LoRAConfig.targets={','.join(self.targets)!r}: expected a non-empty "
                             f"comma-separated subset of {','.join(TARGETS)} (or 'all')")

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def applies(self, name: str) -> bool:
        return self.rank > 0 and name in self.targets


def parse_targets(spec: str) -> tuple:
    """'all' or 'q_proj,v_proj' -> a tuple of target names (checked by LoRAConfig)."""
    spec = spec.strip()
    return TARGETS if spec == "all" else tuple(t.strip() for t in spec.split(",") if t.strip())


def from_config(lora_cfg) -> LoRAConfig:
    """LoRAConfig of the experiment config's `lora` section."""
    return LoRAConfig(rank=int(lora_cfg.rank), alpha=float(lora_cfg.alpha), dropout=float(lora_cfg.dropout),
                      targets=parse_targets(lora_cfg.targets))


def adapter(module: nn.Module, name: str, spec: str, shape: tuple, axes: tuple, n_in: int):
    """The LoRA update of the weight `name` of `module` as a pure function (x, y) -> y +
    alpha/r * dropout(x) A B, or None when the module's config.lora does not target it.

    spec: the einsum of the projection, "x_letters,w_letters->y_letters", whose first
    n_in weight letters are contracted with x. Dropout on the adapter's input runs only
    when the caller passes a "dropout" rng (training); inference never does.
    """
    cfg = module.config.lora
    if not cfg.applies(name):
        return None
    r = cfg.rank
    init_a = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform", in_axis=tuple(range(n_in)),
                                              out_axis=-1)
    a = module.param(name + SUFFIX_A, nn.with_logical_partitioning(init_a, tuple(axes[:n_in]) + (LORA_RANK,)),
                     tuple(shape[:n_in]) + (r,), jnp.float32)
    b = module.param(name + SUFFIX_B, nn.with_logical_partitioning(nn.initializers.zeros,
                                                                   (LORA_RANK,) + tuple(axes[n_in:])),
                     (r,) + tuple(shape[n_in:]), jnp.float32)
    dropout_key = module.make_rng("dropout") if cfg.dropout > 0 and module.has_rng("dropout") else None
    lhs, out = spec.split("->")
    xs, ws = lhs.split(",")
    rl = next(c for c in "rzyxw" if c not in spec)  # a free letter for the rank axis
    mid = "".join(c for c in xs if c not in ws[:n_in]) + rl

    def update(x, y):
        if dropout_key is not None:
            keep = jax.random.bernoulli(dropout_key, 1.0 - cfg.dropout, x.shape)
            x = jnp.where(keep, x / (1.0 - cfg.dropout), 0).astype(x.dtype)
        xa = jnp.einsum(f"{xs},{ws[:n_in]}{rl}->{mid}", x, a.astype(y.dtype)) * jnp.asarray(cfg.scale, y.dtype)
        return y + jnp.einsum(f"{mid},{rl}{ws[n_in:]}->{out}", xa, b.astype(y.dtype))

    return update


# ------------------------------------------------------------------ parameter trees
def is_adapter(path) -> bool:
    """Whether a tree path (jax key path or tuple of names) leads to an adapter leaf."""
    last = path[-1]
    return str(getattr(last, "key", last)).endswith((SUFFIX_A, SUFFIX_B))


def split(tree):
    """(adapters, base): the nested dict `tree` (params, shardings or abstract arrays)
    divided into its adapter leaves and the rest, both nested dicts."""
    adapters, base = {}, {}
    for k, v in tree.items():
        if isinstance(v, dict):
            a, b = split(v)
            if a:
                adapters[k] = a
            if b:
                base[k] = b
        elif k.endswith((SUFFIX_A, SUFFIX_B)):
            adapters[k] = v
        else:
            base[k] = v
    return adapters, base


def combine(adapters, base):
    """The inverse of `split`: one nested dict with the leaves of both."""
    out = dict(base)
    for k, v in adapters.items():
        out[k] = combine(v, out.get(k, {})) if isinstance(v, dict) else v
    return out


def merge_weight(w, a, b, scale: float, dtype=None):
    """W + scale * A B in float32, cast to `dtype` (default: W's dtype). W may carry leading
    (layer) axes that A and B share: lead = a.ndim + b.ndim - 2 - w.ndim."""
    lead = a.ndim + b.ndim - 2 - w.ndim
    n_in = a.ndim - lead - 1
    a2 = a.reshape(a.shape[:lead] + (math.prod(a.shape[lead:lead + n_in]), a.shape[-1]))
    b2 = b.reshape(b.shape[:lead + 1] + (-1,))
    delta = jnp.matmul(a2.astype(jnp.float32), b2.astype(jnp.float32), precision=jax.lax.Precision.HIGHEST)
    return (w.astype(jnp.float32) + scale * delta.reshape(w.shape)).astype(dtype or w.dtype)


def merge(cfg: LoRAConfig, params, dtype=None):
    """Params with every adapted weight replaced by W + scale * A B (in `dtype`, default
    W's) and no adapter leaves: the tree of the same model without LoRA."""
    adapters, base = split(params)

    def walk(ad, node):
        out = dict(node)
        for k, v in ad.items():
            if isinstance(v, dict):
                out[k] = walk(v, node[k])
            elif k.endswith(SUFFIX_A):
                w = k[:-len(SUFFIX_A)]
                out[w] = merge_weight(node[w], v, ad[w + SUFFIX_B], cfg.scale, dtype)
        return out

    return walk(adapters, base)
