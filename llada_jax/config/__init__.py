"""The run config: its schema and defaults (`schema`: every section and field, with its
meaning), every rule about its values (`rules`: types, ranges, cross-field rules, the
mesh, LoRA, checkpoint and RL sections, the data paths via `paths`), and loading an
experiment file (configs/*.py) by path."""

from llada_jax.config.schema import MEANINGS, base_config, describe, experiment_mode, load_config_file, lock, sibling

__all__ = ["MEANINGS", "base_config", "describe", "experiment_mode", "load_config_file", "lock", "sibling"]
