"""llada_jax.host_memory: under "keep", a block as large as an XLA:CPU execution's
temporaries comes from the main heap, from any thread, instead of its own mmap."""

import os
import subprocess
import sys

import pytest

from llada_jax import host_memory

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Where malloc puts 256 MiB blocks, from the main thread and from a thread started after the
# policy (as XLA's are): "heap" when inside the main heap (below the program break), which a
# free keeps mapped for the next block; "mmap" when mapped for the block alone.
PROBE = """
import ctypes, threading
from llada_jax import host_memory
print(host_memory.configure())
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
libc.free.argtypes, libc.sbrk.restype, libc.sbrk.argtypes = (ctypes.c_void_p,), ctypes.c_void_p, (ctypes.c_long,)
def where(out):
    block = libc.malloc(256 << 20)
    out.append("heap" if block < libc.sbrk(0) else "mmap")
    libc.free(block)
places = []
where(places)
t = threading.Thread(target=where, args=(places,))
t.start(); t.join()
print(*places)
"""


def _places(policy):
    env = dict(os.environ, PYTHONPATH=ROOT, **{host_memory.ENV: policy})
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_kept_memory_serves_large_blocks_from_the_main_heap():
    assert _places("keep") == ["keep", "heap", "heap"]
    assert _places("system") == ["system", "mmap", "mmap"]
    assert _places("") == ["system", "mmap", "mmap"]  # the default


def test_an_unknown_policy_is_named(monkeypatch):
    monkeypatch.setenv(host_memory.ENV, "kept")
    with pytest.raises(ValueError, match=r"\$LLADA_JAX_HOST_MEMORY='kept': expected one of system, keep"):
        host_memory.configure()
