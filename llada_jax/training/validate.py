"""Moved to `llada_jax.config.rules` (every rule about a run config); these names stay
while other branches import them from here."""

from llada_jax.config.rules import check as train_config  # noqa: F401
from llada_jax.config.rules import check_train as train_run  # noqa: F401
