"""Pallas TPU splash attention (`jax.experimental.pallas.ops.tpu.splash_attention`).

One kernel per call shape and pattern: a FullMask (bidirectional), CausalMask (causal) or
the pattern's block-sparse NumpyMask (block-causal, BD3-LM's block diffusion: splash
skips its empty blocks) over the sequence, padding
through segment ids (queries 1, valid keys 1, masked keys 0), vmapped over the batch and,
under a mesh, shard_mapped over the batch (data x fsdp) and head (tensor) axes, since
GSPMD cannot partition a Pallas call. Off TPU it runs in Pallas interpret mode (slow:
for tests). Lengths are padded to multiples of 128 (the kernel's lane width); the
queries are pre-scaled (splash does not scale). Splash leaves a row whose keys are all
masked undefined; such rows get the dense reference's uniform average of the values
their pattern allows.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as sk
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as sm
from jax.sharding import PartitionSpec as P

import numpy as np

from llada_jax.model.attention import KeyMask, Pattern, resolve
from llada_jax.parallel.sharding import batch_axes

LANES = 128


def _block(n: int) -> int:
    return next(blk for blk in (512, 256, LANES) if n % blk == 0)


def make_kernel(lp: int, sp: int, heads: int, pattern: Pattern, interpret: bool, l: int = 0, s: int = 0):
    """A splash MHA kernel (GQA when K < H) for padded lengths lp x sp (real lengths l x s)."""
    if pattern.kind == "bidirectional":
        one = sm.FullMask((lp, sp))
    elif pattern.kind == "causal":
        one = sm.CausalMask((lp, sp))
    else:  # padded key columns stay allowed: segment ids exclude them
        one = sm.NumpyMask(pattern.dense(l, s, lp, sp) | (np.arange(sp) >= s)[None, :])
    bq, bk = _block(lp), _block(sp)
    sizes = sk.BlockSizes(block_q=bq, block_kv=bk, block_kv_compute=bk, block_q_dkv=bq, block_kv_dkv=bk,
                          block_kv_dkv_compute=bk, block_q_dq=bq, block_kv_dq=bk)
    return sk.make_splash_mha(sm.MultiHeadMask([one] * heads), head_shards=1, q_seq_shards=1,
                              block_sizes=sizes, interpret=interpret)


def attention(q_BxLxHxD, k_BxSxKxD, v_BxSxKxD, mask: KeyMask, *, pattern: Pattern | None = None,
              causal: bool = False):
    pattern = resolve(pattern, causal)
    b, l, h, d = q_BxLxHxD.shape
    s = k_BxSxKxD.shape[1]
    lp, sp = math.ceil(l / LANES) * LANES, math.ceil(s / LANES) * LANES
    valid = mask.as_bool(s)
    valid_BxS = jnp.ones((b, s), bool) if valid is None else valid
    scale = jnp.asarray(1.0 / math.sqrt(d), q_BxLxHxD.dtype)
    q = jnp.pad(q_BxLxHxD * scale, ((0, 0), (0, lp - l), (0, 0), (0, 0))).transpose(0, 2, 1, 3)
    k = jnp.pad(k_BxSxKxD, ((0, 0), (0, sp - s), (0, 0), (0, 0))).transpose(0, 2, 1, 3)
    v = jnp.pad(v_BxSxKxD, ((0, 0), (0, sp - s), (0, 0), (0, 0))).transpose(0, 2, 1, 3)
    seg_q = jnp.ones((b, lp), jnp.int32)
    seg_kv = jnp.pad(valid_BxS, ((0, 0), (0, sp - s))).astype(jnp.int32)
    interpret = jax.default_backend() != "tpu"

    def per_shard(q, k, v, seg_q, seg_kv):
        kernel = make_kernel(lp, sp, q.shape[1], pattern, interpret, l, s)
        return jax.vmap(kernel)(q, k, v, segment_ids=sk.SegmentIds(seg_q, seg_kv))

    mesh = jax.sharding.get_abstract_mesh()
    if not mesh.empty and {"data", "fsdp"} <= set(mesh.axis_names):
        heads = "tensor" if "tensor" in mesh.axis_names and k.shape[1] % mesh.shape["tensor"] == 0 else None
        qkv, seg = P(batch_axes(mesh), heads, None, None), P(batch_axes(mesh), None)
        per_shard = jax.shard_map(per_shard, mesh=mesh, in_specs=(qkv, qkv, qkv, seg, seg), out_specs=qkv,
                                  check_vma=False)
    out = per_shard(q, k, v, seg_q, seg_kv).transpose(0, 2, 1, 3)[:, :l]
    # All-masked rows: the dense reference's uniform average over the keys the pattern allows.
    allowed_LxS = jnp.asarray(pattern.dense(l, s), jnp.float32)
    mean_v = jnp.einsum("ls,bskd->blkd", allowed_LxS / jnp.sum(allowed_LxS, axis=1, keepdims=True),
                        v_BxSxKxD.astype(jnp.float32))
    mean_v = jnp.repeat(mean_v, h // k_BxSxKxD.shape[2], axis=2).astype(out.dtype)
    any_valid_BxL = jnp.einsum("bs,ls->bl", valid_BxS.astype(jnp.float32), allowed_LxS) > 0
    return jnp.where(any_valid_BxL[:, :, None, None], out, mean_v)
