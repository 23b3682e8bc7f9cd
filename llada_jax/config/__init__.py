"""The run config: its schema (`schema`: fields, defaults, meanings, loading) and every rule
about it (`rules`, with the RL section's in `rules_rl`). Importing this package loads the
schema only (ml_collections, no JAX): configs/*.py import it. The rules are imported by
their module name, `from llada_jax.config import rules`."""

from llada_jax.config.schema import (FIELD_DOCS, MODEL_DEFAULTS, base_config, describe, experiment_mode,
                                     load_config_file, lock, model_field, set_model_field, unset_fields,
                                     with_model_defaults)

__all__ = ["FIELD_DOCS", "MODEL_DEFAULTS", "base_config", "describe", "experiment_mode", "load_config_file", "lock",
           "model_field", "set_model_field", "unset_fields", "with_model_defaults"]
