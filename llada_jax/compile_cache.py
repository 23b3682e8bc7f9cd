"""JAX's persistent compilation cache for the command lines: a rerun loads its compiled
programs from disk instead of compiling them again.

`enable()` is what every command's start-up calls (`llada_jax.cli.run_absl`), before
anything is compiled. The folder is `$LLADA_JAX_CACHE_DIR` when set ("off" turns the
cache off), else JAX's own `$JAX_COMPILATION_CACHE_DIR` when set (the test suite's),
else `llada_jax/jax_cache` under the user's cache directory (`$XDG_CACHE_HOME`, default
~/.cache). Processes may share it: JAX writes each entry
atomically under a key of the program, the JAX/XLA versions, the devices and the flags,
so a changed program or flag is a new entry, never a wrong one.
"""

from __future__ import annotations

import os

ENV = "LLADA_JAX_CACHE_DIR"


def default_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "llada_jax", "jax_cache")


def enable(path: str | None = None) -> str | None:
    """Turn the cache on in `path` (default: $LLADA_JAX_CACHE_DIR, else `default_dir()`).
    Returns the folder, or None when $LLADA_JAX_CACHE_DIR is "off" (or "0") and no `path`
    is given. Every program is cached, however fast it compiled: on a CPU the many small
    programs of a run (init, sampling, evaluation) add up to seconds."""
    import jax

    path = path or os.environ.get(ENV) or jax.config.jax_compilation_cache_dir or default_dir()
    if path.lower() in ("off", "0", "none"):
        return None
    os.makedirs(path, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", path)
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:  # JAX's own setting wins
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path
