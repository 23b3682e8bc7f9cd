"""The mask predictor of every model family: `build(config)` (the registry `families/`),
configuration, Transformer, attention implementations (`attention/`, a registry by name)
and adapters on the projections (`adapters/`)."""

from llada_jax.model.families import build
from llada_jax.model.params import abstract_params, compile_init, init_params, param_count
from llada_jax.model.transformer import DTYPES, REMAT_POLICIES, KVCache, LLaDA, LLaDAConfig, apply_rope, lm_head, rope_tables

__all__ = ["DTYPES", "REMAT_POLICIES", "KVCache", "build", "LLaDA", "LLaDAConfig", "abstract_params", "apply_rope",
           "compile_init", "init_params", "lm_head", "param_count", "rope_tables"]
