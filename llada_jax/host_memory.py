"""The process's host memory policy: freed memory stays mapped for the next execution.

XLA:CPU allocates each execution's temporaries as one block (224 MB for the forward pass
of benchmarks/train.py's d_model 1024 model) and frees it when the execution ends. glibc's
malloc serves a block that large with mmap and returns it with munmap, so every step
touches its whole block again as new pages: about 150,000 page faults and 0.24 s of kernel
time per train step at d_model 1024 on a 2-core CPU. `keep_freed_memory()` has malloc
serve every block from one heap that it never trims, so each execution reuses pages that
are already mapped. The cost is that the process keeps its peak host memory until it
exits, which a training or sampling process reaches anyway.

The commands call it at start-up (`llada_jax.cli.run_absl`), before JAX starts its threads:
a thread that allocated before keeps its own arena. `$LLADA_JAX_HOST_MEMORY=system` keeps
glibc's defaults. It does nothing where malloc is not glibc's.
"""

from __future__ import annotations

import ctypes
import os
import sys

ENV = "LLADA_JAX_HOST_MEMORY"

# mallopt's parameters (glibc malloc.h)
M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8


def keep_freed_memory() -> bool:
    """Set glibc malloc to one arena (XLA's threads share the main heap), no mmap-served
    blocks, and a heap whose free top goes back to the system only past 2 GiB. True when
    set; False where malloc is not glibc's or $LLADA_JAX_HOST_MEMORY is "system"."""
    if os.environ.get(ENV, "keep").lower() == "system" or not sys.platform.startswith("linux"):
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
