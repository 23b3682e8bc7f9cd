"""The model's parameters: their abstract tree (shapes and logical axes, nothing allocated),
a fresh initialisation compiled once per shape, and their count."""

from __future__ import annotations

import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from llada_jax.model import families
from llada_jax.model.transformer import LLaDAConfig


def abstract_params(config: LLaDAConfig, batch: int = 1, seq_len: int = 8) -> Any:
    """The parameter tree as shapes with logical axis names (nn.Partitioned leaves of
    ShapeDtypeStructs), nothing allocated: what parameter shardings and restores start from."""
    tokens_BxL = jnp.zeros((batch, seq_len), jnp.int32)
    return jax.eval_shape(lambda r: families.build(config).init(r, tokens_BxL)["params"], jax.random.PRNGKey(0))


def init_params(config: LLaDAConfig, rng, seq_len: int = 8) -> Any:
    """Unboxed float parameters of a freshly initialised model (no logical metadata)."""
    # `causal` and `block_size` change the mask, not a parameter: the causal baseline, the
    # block-causal model and the mask predictor of one shape share one compiled init (the same
    # values, a compile fewer each)
    if getattr(config, "causal", False) or getattr(config, "block_size", 0):
        config = config.replace(causal=False, block_size=0)
    if isinstance(rng, jax.core.Tracer):  # under a transformation: part of the caller's program
        return _init_fn(config, seq_len)(rng)
    rng_type = jax.ShapeDtypeStruct(jnp.shape(rng), jnp.result_type(rng))
    try:
        init = _compiled_init(config, seq_len, rng_type)
    except TypeError:  # a config with an unhashable field: compiled for this call only
        init = _compiled_init.__wrapped__(config, seq_len, rng_type)
    return init(rng)


def _init_fn(config: LLaDAConfig, seq_len: int):
    # One compiled program per shape: run eagerly, init compiles each of its hundreds of
    # primitives separately (seconds on CPU for a tiny model).
    return jax.jit(lambda rng: nn.unbox(families.build(config).init(rng, jnp.zeros((1, seq_len), jnp.int32))["params"]))


@functools.lru_cache(maxsize=64)
def _compiled_init(config: LLaDAConfig, seq_len: int, rng_type):
    return compile_init(_init_fn(config, seq_len).lower(rng_type))


# Initialisation runs once, and its program (a random draw per parameter) takes longer to
# compile than to run for small models: compiled at LLVM -O0 it compiles in about half the
# time (a 3-layer d_model 96 model: 1.9 -> 1.0 s on a 2-core CPU) and runs ~6x slower
# (7.6M parameters: 0.06 -> 0.35 s; 22M: 0.18 -> 1.07 s), so below this many parameters.
FAST_COMPILE_INIT_PARAMS = 10_000_000


def compile_init(lowered, params_info=None):
    """`lowered` (an initialisation's `jit(...).lower(...)`) compiled: at -O0 when the
    parameters among its outputs (`params_info`, a part of `lowered.out_info`; default all of
    it) hold at most FAST_COMPILE_INIT_PARAMS values. The values differ from the optimised
    program's in the last bit at most (fused multiply-adds), and each model size always gets
    the same program."""
    info = lowered.out_info if params_info is None else params_info
    n = sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(info))
    return lowered.compile(compiler_options={"xla_backend_optimization_level": 0}
                           if n <= FAST_COMPILE_INIT_PARAMS else None)


def param_count(params) -> int:
    return sum(int(x.size) for x in jax.tree_util.tree_leaves(params))
