"""The process's host memory policy, `$LLADA_JAX_HOST_MEMORY`: "system" (the default) or
"keep", freed memory stays mapped for the next execution.

XLA:CPU allocates each execution's temporaries as one block (224 MB for the forward pass
of benchmarks/train.py's d_model 1024 model) and frees it when the execution ends. glibc's
malloc serves a block that large with mmap and returns it with munmap, so every execution
touches its whole block again as new pages. "keep" has malloc serve every block from one
heap that it does not trim, so later executions reuse pages that are already mapped.

Measured on a 2-core CPU: sampling 128 tokens for 8 rows at d_model 512 (vocabulary
126464) took 3.2 million page faults and 5 s of kernel time, and 50 s instead of 55-63 s
with "keep" (no page faults); the d_model 1024 train step's faults fall from 150,000 to
25,000-75,000 per step, its time within the machine's noise. But one arena makes XLA's
compiler threads contend for malloc's lock: a first one-step run of configs/tiny.py,
compile-bound, took 14.4-16.6 s instead of 12.0-14.5 s. Hence "keep" is for long CPU
sampling and serving, not the default; under it the process holds its peak host memory
until it exits.

The commands apply it at start-up (`llada_jax.cli.run_absl`), before JAX starts its
threads: a thread that allocated before keeps its own arena. Where malloc is not glibc's,
"keep" does nothing.
"""

from __future__ import annotations

import ctypes
import os
import sys

ENV = "LLADA_JAX_HOST_MEMORY"
POLICIES = ("system", "keep")

# mallopt's parameters (glibc malloc.h)
M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8


def configure() -> str:
    """Apply $LLADA_JAX_HOST_MEMORY; the policy in effect ("keep" only where it was set)."""
    policy = os.environ.get(ENV, "system").strip().lower() or "system"
    if policy not in POLICIES:
        raise ValueError(f"${ENV}={os.environ[ENV]!r}: expected one of {', '.join(POLICIES)}")
    return "keep" if policy == "keep" and keep_freed_memory() else "system"


def keep_freed_memory() -> bool:
    """Set glibc malloc to one arena (XLA's threads share the main heap), no mmap-served
    blocks, and a heap whose free top goes back to the system only past 2 GiB. False
    where malloc is not glibc's."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # the arena first: a block larger than a thread arena's heap (64 MiB) is mmap-served
    # whatever M_MMAP_MAX says, so every block must come from the main heap
    settings = ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 2**31 - 1))
    return all(mallopt(param, value) == 1 for param, value in settings)
