"""Moved to `llada_jax.commands.flags` (the one flag library of the commands); these
names stay while other branches import them from here."""

from llada_jax.commands.flags import USER_ERRORS, check_overrides, define_config_flag, run_absl, user_errors  # noqa: F401
