"""The Transformer's layer stack, run from `LLaDA.__call__`.

With `scan_layers` the blocks' parameters are stacked (one tree per stack, leading axis the
layer): a stack runs as a loop over its layers (`nn.scan`, `scan_unroll` layers per
iteration) or, when it has at most `scan_unroll` layers (0: UNROLL_LAYERS), as straight-line
code over the same parameters (`StraightLine`). Without it, each block has its own tree
("blocks_i"). An MoE model with dense first layers has two stacks, "dense_blocks" then
"blocks". Every way gives the same function; they differ in compile time and speed.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from llada_jax.model import attention as attention_lib
from llada_jax.model.layers import LAYERS
from llada_jax.model.moe import MOE_LOSSES

UNROLL_LAYERS = 8  # scan_unroll=0: deeper stacks run as a loop (compile time grows with the layers)


def layers(cfg, block_of: Callable[[bool], Any], x, key_mask, cos, sin, cache, *, return_kv: bool,
           pattern: attention_lib.Pattern, initializing: bool):
    """(x after the cfg.n_layers blocks, their (k, v) stacked over the layers or None).
    block_of(looped): the block's module class (under nn.remat where the config asks);
    `cache`: stacked (k, v) of every layer or None; `initializing`: the model's init, which
    creates the stacked tree through the loop."""
    if not cfg.scan_layers:
        per_layer = []
        for i in range(cfg.n_layers):
            layer_cache = None if cache is None else (cache[0][i], cache[1][i])
            dense = cfg.moe.enabled and i < cfg.moe.first_k_dense
            x, kv = block_of(False)(cfg, return_kv, dense, pattern, name=f"blocks_{i}")(x, key_mask, cos, sin,
                                                                                       layer_cache)
            per_layer.append(kv)
        return x, (jax.tree_util.tree_map(lambda *a: jnp.stack(a), *per_layer) if return_kv else None)
    k_dense = cfg.moe.first_k_dense if cfg.moe.enabled else 0
    stacks = [(k_dense, True, "dense_blocks")] if k_dense else []
    stacks.append((cfg.n_layers - k_dense, False, "blocks"))
    kvs, start, unroll = [], 0, cfg.scan_unroll or UNROLL_LAYERS
    for length, dense, name in stacks:
        if unroll >= length and not initializing:
            stack = nn.map_variables(StraightLine, "params", trans_in_fn=functools.partial(_layer_slices, length=length))
            stack = functools.partial(stack, length=length, block=block_of(False))
        else:
            stack = nn.scan(block_of(True), variable_axes={"params": 0, MOE_LOSSES: 0},
                            split_rngs={"params": True, "dropout": True},
                            in_axes=(nn.broadcast, nn.broadcast, nn.broadcast, 0), length=length,
                            unroll=min(unroll, length), metadata_params={nn.PARTITION_NAME: LAYERS})
        part = None if cache is None else (cache[0][start:start + length], cache[1][start:start + length])
        x, kv = stack(cfg, return_kv, dense, pattern, name=name)(x, key_mask, cos, sin, part)
        kvs.append(kv)
        start += length
    if len(kvs) == 1 or not return_kv:
        return x, kvs[0]
    return x, jax.tree_util.tree_map(lambda *a: jnp.concatenate(a), *kvs)


class StraightLine(nn.Module):
    """A scanned stack's `length` blocks as straight-line code, block i named "i" (under
    `nn.map_variables`, which hands each its slice of the stacked parameters). On XLA:CPU its
    forward and backward pass take 10-35% less time than the scanned loop's (4 layers, d_model
    512 and 1024, benchmarks/train_profile.py): no dynamic slices of the stacked weights,
    gradients and residuals. The gradients are the loop's (bitwise at those shapes)."""

    config: Any  # LLaDAConfig
    return_kv: bool
    dense_mlp: bool
    pattern: attention_lib.Pattern
    length: int
    block: Any  # Block, or Block under nn.remat

    @nn.compact
    def __call__(self, x, key_mask, cos, sin, cache):
        kvs = []
        for i in range(self.length):
            layer_cache = None if cache is None else (cache[0][i], cache[1][i])
            x, kv = self.block(self.config, self.return_kv, self.dense_mlp, self.pattern, name=str(i))(
                x, key_mask, cos, sin, layer_cache)
            kvs.append(kv)
        return x, (jax.tree_util.tree_map(lambda *a: jnp.stack(a), *kvs) if self.return_kv else None)


def _layer_slices(collections: dict, length: int) -> dict:
    """{collection: {"i": layer i's variables}} of a scanned stack's (leading axis: the layer).
    One `lax.split` per array, whose gradient is one concatenate of the layers' gradients:
    indexing each layer instead sums `length` zero-padded copies of the whole stack (at
    d_model 1024, 4 layers: 9 such sums, 79 ms of CPU time per step)."""
    out = {}
    for col, tree in collections.items():
        leaves, treedef = jax.tree_util.tree_flatten(tree)
        pieces = [jax.lax.split(a, (1,) * length) for a in leaves]
        out[col] = {str(i): treedef.unflatten([p[i][0] for p in pieces]) for i in range(length)}
    return out
