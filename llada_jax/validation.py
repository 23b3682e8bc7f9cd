"""Argument checks shared by the public entry points that take token ids (the sampler,
the likelihood, the model on concrete inputs): a ValueError naming the argument, its
value and what was expected, on the host, before anything compiles.

Each check returns the value normalised (numpy integers -> int, ids -> an int32 array)
so callers use what was checked. `special_ids` gives the defaults of the special ids.
"""

from __future__ import annotations

import math
import numbers

import jax
import numpy as np

# Special ids of the published LLaDA-8B tokenizer: the defaults for a model without a config.
PUBLISHED_IDS = {"mask_id": 126336, "eos_id": 126081, "eot_id": 126348}


def bad(where: str, name: str, value, expected: str):
    raise ValueError(f"{where}: {name}={value!r}, expected {expected}")


def integer(where: str, name: str, value, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """A Python or numpy integer (not a bool, not a float) within [minimum, maximum]."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        bad(where, name, value, "an integer")
    value = int(value)
    if minimum is not None and value < minimum:
        bad(where, name, value, f"an integer >= {minimum}" + ("" if maximum is None else f" and <= {maximum}"))
    if maximum is not None and value > maximum:
        bad(where, name, value, f"an integer <= {maximum}" + ("" if minimum is None else f" and >= {minimum}"))
    return value


def number(where: str, name: str, value, *, minimum: float | None = None) -> float:
    """A finite real number (Python or numpy; not a bool), >= minimum when given."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        bad(where, name, value, "a finite number")
    value = float(value)
    if not math.isfinite(value):
        bad(where, name, value, "a finite number")
    if minimum is not None and value < minimum:
        bad(where, name, value, f">= {minimum}")
    return value


def token_id(where: str, name: str, value, vocab: int | None) -> int:
    """A special token id (mask, eos, eot) inside the vocabulary when it is known."""
    return integer(where, name, value, minimum=0, maximum=None if vocab is None else vocab - 1)


def token_ids(where: str, name: str, ids, vocab: int | None, *, ndim: int) -> np.ndarray:
    """Token ids as an int32 array of `ndim` dimensions; integer dtype (not bool, not
    float: a float prompt is usually a bug upstream) and inside [0, vocab)."""
    ids = np.asarray(ids)
    if ids.dtype == bool or not (np.issubdtype(ids.dtype, np.integer) or ids.size == 0):
        bad(where, f"{name}.dtype", str(ids.dtype), "integer token ids")
    if ids.ndim != ndim:
        shape = "(batch, length)" if ndim == 2 else "(length,)"
        bad(where, f"{name}.shape", ids.shape, f"{ndim}-D {shape}")
    if ids.size and vocab is not None and (ids.min() < 0 or ids.max() >= vocab):
        worst = int(ids.max() if ids.max() >= vocab else ids.min())
        bad(where, f"{name} token", worst, f"ids in [0, {vocab})")
    return ids.astype(np.int32, copy=False)


def rng_key(where: str, name: str, rng):
    """A JAX PRNG key: a typed key (jax.random.key) or a raw uint32 (2,) PRNGKey."""
    if isinstance(rng, jax.Array) and jax.dtypes.issubdtype(rng.dtype, jax.dtypes.prng_key):
        if rng.shape == ():
            return rng
    elif isinstance(rng, (jax.Array, np.ndarray)) and rng.dtype == np.uint32 and rng.shape == (2,):
        return rng
    bad(where, name, rng if not hasattr(rng, "shape") else f"array {rng.dtype}{list(rng.shape)}",
        "a single JAX PRNG key (jax.random.key(seed) or jax.random.PRNGKey(seed))")


def vocab_of(model) -> int | None:
    """The number of embedding rows of `model` (None when it carries no config)."""
    config = getattr(model, "config", None)
    return None if config is None else config.embedding_size


def check_concrete_ids(where: str, ids, vocab: int):
    """Range-check ids that are concrete (not traced inside jit): an id outside the
    embedding table would silently give NaN or wrapped logits."""
    if isinstance(ids, jax.core.Tracer) or (isinstance(ids, jax.Array) and not ids.is_fully_addressable):
        return
    host = np.asarray(ids)
    if host.dtype == bool or not np.issubdtype(host.dtype, np.integer):
        bad(where, "input_ids.dtype", str(host.dtype), "integer token ids")
    if host.size and (host.min() < 0 or host.max() >= vocab):
        worst = int(host.max() if host.max() >= vocab else host.min())
        bad(where, "input_ids token", worst, f"ids in [0, {vocab})")


def special_ids(model, mask_id=None, eos_id=None, eot_id=None):
    """Defaults of the special ids: the model's config (mask, eos; eot defaults to eos),
    or the published LLaDA-8B ids for a model without a config."""
    config = getattr(model, "config", None)
    if config is None:
        return (PUBLISHED_IDS["mask_id"] if mask_id is None else mask_id,
                PUBLISHED_IDS["eos_id"] if eos_id is None else eos_id,
                PUBLISHED_IDS["eot_id"] if eot_id is None else eot_id)
    mask_id = config.mask_token_id if mask_id is None else mask_id
    eos_id = config.eos_token_id if eos_id is None else eos_id
    return mask_id, eos_id, eos_id if eot_id is None else eot_id
