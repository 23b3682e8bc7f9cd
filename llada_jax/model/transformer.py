"""The LLaDA mask predictor: a LLaMA-style Transformer without the causal mask.

The math follows the published PyTorch modeling file (modeling_llada.py):
pre-norm blocks, RMSNorm and RoPE ("rotate half") computed in float32, SwiGLU MLP,
grouped-query attention, no biases, an untied output head and no logit scaling.

Every parameter carries logical axis names (MaxText style); `llada_jax.parallel.sharding` maps
them onto a device mesh with one table of rules. The layers' parameters are stacked and run
as a loop or as straight-line code (`llada_jax.model.stack`), rematerialised with a named policy.

The same `__call__` serves training, plain sampling and cached sampling: it can
compute the output head for selected positions only (`output_positions`), take the
absolute RoPE positions of its queries (`positions`), attend to cached keys/values of
other positions (`kv_cache`), and return the keys/values it computed (`return_kv`).
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import NamedTuple

import jax
import jax.numpy as jnp
import flax.linen as nn

from llada_jax.model import alignment, attention as attention_lib, families
from llada_jax import validation
from llada_jax.model.adapters.lora import LoRAConfig
from llada_jax.model import moe as moe_lib
from llada_jax.model.layers import (  # noqa: F401 (the axis names are part of this module's API)
    ACT_BATCH, ACT_EMBED, ACT_LENGTH, EMBED, HEAD_DIM, HEADS, KV_HEADS, LAYERS, MLP, NORM, VOCAB, param, project,
    projection)
from llada_jax.model.moe import MoEConfig
from llada_jax.model import rope, stack
from llada_jax.model.stack import UNROLL_LAYERS
from llada_jax.model.rope import RopeScaling

REMAT_POLICIES = {
    "none": None,  # no rematerialisation: keep every activation
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}
DTYPES = ("float32", "bfloat16", "float16")
# The Block's MLP by config.mlp: (module, function(block, x_BxLxE) -> y_BxLxE), imported on
# first use; the function makes its parameters on the Block (LoRA and the layouts see them there).
MLPS = {"swiglu": ("llada_jax.model.mlp", "swiglu_mlp")}


@dataclasses.dataclass(frozen=True)
class LLaDAConfig:
    """Model shape (Hugging Face config.json names) plus JAX-side settings."""

    family: str = "llada"  # a key of llada_jax.model.families.FAMILIES: what build() makes of it
    d_model: int = 4096
    n_heads: int = 32
    n_kv_heads: int = 32
    n_layers: int = 32
    mlp_hidden_size: int = 12288
    vocab_size: int = 126464
    embedding_size: int = 126464
    max_sequence_length: int = 4096
    rope_theta: float = 500000.0
    rms_norm_eps: float = 1e-5
    mask_token_id: int = 126336
    eos_token_id: int = 126081
    pad_token_id: int = 126081
    weight_tying: bool = False
    init_std: float = 0.02
    # Architecture knobs of the other families (the defaults are LLaDA's).
    qkv_bias: bool = False  # biases on q/k/v_proj (Qwen2, Dream)
    qk_norm: bool = False  # RMSNorm over head_dim on queries and keys before RoPE (Qwen3)
    attention_head_dim: int = 0  # 0: d_model // n_heads (Qwen3 sets its own head_dim)
    partial_rotary_factor: float = 1.0  # RoPE on the first head_dim * factor dims only
    rope_scaling: RopeScaling = RopeScaling()  # Llama 3's context rescaling (llada_jax.model.rope)
    logit_alignment: str = "same"  # "same" or "shifted" (llada_jax.model.alignment)
    mlp: str = "swiglu"  # a key of MLPS
    # JAX side.
    dtype: str = "float32"  # compute dtype of activations and matmuls
    param_dtype: str = "float32"  # storage dtype of the parameters (master weights)
    causal: bool = False  # True: an autoregressive baseline of the same shape
    block_size: int = 0  # > 0: block-causal (block diffusion: blocks of this many tokens from index 0); 0: bidirectional
    scan_layers: bool = True
    # Layers per iteration of the loop over a scanned stack; a stack of at most this many runs
    # as straight-line code over the same stacked parameters (the parameter tree is the same
    # either way). 0: by depth, straight-line up to UNROLL_LAYERS layers.
    scan_unroll: int = 0
    remat_policy: str = "none"  # a key of REMAT_POLICIES
    attention: str = "dense"  # a key of llada_jax.model.attention.IMPLEMENTATIONS
    mlp_chunk: int = 0  # the MLP over sequence chunks of this many tokens (memory); 0: whole
    lora: LoRAConfig = LoRAConfig()  # adapters on the Block projections; rank 0: none
    moe: MoEConfig = MoEConfig()  # the sparse MoE MLP (llada_jax.model.moe); num_experts 0: dense

    def __post_init__(self):
        if isinstance(self.lora, dict):  # from run.json
            object.__setattr__(self, "lora", LoRAConfig(**self.lora))
        if isinstance(self.moe, dict):
            object.__setattr__(self, "moe", MoEConfig(**self.moe))
        if isinstance(self.rope_scaling, dict):
            object.__setattr__(self, "rope_scaling", RopeScaling(**self.rope_scaling))

        def need(ok, field, expected):
            if not ok:
                raise ValueError(f"LLaDAConfig.{field}={getattr(self, field)!r}: expected {expected}")

        for f in ("d_model", "n_heads", "n_kv_heads", "n_layers", "mlp_hidden_size",
                  "vocab_size", "embedding_size", "max_sequence_length"):
            need(isinstance(getattr(self, f), int) and getattr(self, f) > 0, f, "a positive integer")
        need(isinstance(self.attention_head_dim, int) and self.attention_head_dim >= 0, "attention_head_dim",
             "an integer >= 0 (0: d_model // n_heads)")
        need(self.attention_head_dim or self.d_model % self.n_heads == 0, "d_model",
             f"a multiple of n_heads={self.n_heads} (or an explicit attention_head_dim)")
        need(0 < self.partial_rotary_factor <= 1, "partial_rotary_factor", "in (0, 1]")
        need(self.rotary_dim % 2 == 0 and self.rotary_dim > 0, "n_heads",
             f"a rotary dim (head_dim {self.head_dim} x partial_rotary_factor) that is even and > 0, for RoPE")
        need(self.logit_alignment in alignment.ALIGNMENTS, "logit_alignment", f"one of {alignment.ALIGNMENTS}")
        need(self.mlp in MLPS, "mlp", f"one of {sorted(MLPS)}")
        need(self.n_heads % self.n_kv_heads == 0, "n_kv_heads", f"a divisor of n_heads={self.n_heads}")
        need(self.embedding_size >= self.vocab_size, "embedding_size", f">= vocab_size={self.vocab_size}")
        for f in ("mask_token_id", "eos_token_id", "pad_token_id"):
            need(0 <= getattr(self, f) < self.vocab_size, f, f"a token id in [0, vocab_size={self.vocab_size})")
        need(self.family in families.FAMILIES, "family", f"one of {sorted(families.FAMILIES)}")
        need(self.rope_theta > 0, "rope_theta", "> 0")
        need(self.rms_norm_eps > 0, "rms_norm_eps", "> 0")
        need(self.dtype in DTYPES, "dtype", f"one of {DTYPES}")
        need(self.param_dtype in DTYPES, "param_dtype", f"one of {DTYPES}")
        need(self.remat_policy in REMAT_POLICIES, "remat_policy", f"one of {sorted(REMAT_POLICIES)}")
        need(self.attention in attention_lib.IMPLEMENTATIONS, "attention",
             f"one of {sorted(attention_lib.IMPLEMENTATIONS)}")
        need(isinstance(self.block_size, int) and self.block_size >= 0 and not (self.block_size and self.causal),
             "block_size", "an integer >= 0 (0: bidirectional), and 0 when causal=True")
        need(isinstance(self.scan_unroll, int) and self.scan_unroll >= 0, "scan_unroll",
             f"an integer >= 0 (0: straight-line code up to {UNROLL_LAYERS} layers)")
        need(isinstance(self.mlp_chunk, int) and self.mlp_chunk >= 0, "mlp_chunk",
             "an integer >= 0 (0: the MLP over the whole sequence at once)")
        for field, expected in rope.problems(self.rope_scaling)[:1]:
            raise ValueError(f"LLaDAConfig.rope_scaling.{field}={getattr(self.rope_scaling, field)!r}: "
                             f"expected {expected}")
        for field, expected in moe_lib.problems(self.moe, self.n_layers)[:1]:
            raise ValueError(f"LLaDAConfig.moe.{field}={getattr(self.moe, field)!r}: expected {expected}")

    @property
    def head_dim(self) -> int:
        return self.attention_head_dim or self.d_model // self.n_heads

    @property
    def rotary_dim(self) -> int:
        return int(self.head_dim * self.partial_rotary_factor)

    @property
    def attention_pattern(self) -> attention_lib.Pattern:
        """The pattern of a plain forward pass: causal, block-causal or bidirectional."""
        if self.causal:
            return attention_lib.CAUSAL
        return attention_lib.block_causal(self.block_size) if self.block_size else attention_lib.BIDIRECTIONAL

    def replace(self, **changes) -> "LLaDAConfig":
        return dataclasses.replace(self, **changes)

    @classmethod
    def llada_8b(cls, **overrides) -> "LLaDAConfig":
        """The published LLaDA-8B shape; the defaults are exactly it."""
        return cls(**overrides)

    @classmethod
    def tiny(cls, **overrides) -> "LLaDAConfig":
        """A model small enough for unit tests and the CPU demo."""
        kw = dict(d_model=64, n_heads=4, n_kv_heads=2, n_layers=2, mlp_hidden_size=128,
                  vocab_size=256, embedding_size=256, max_sequence_length=512,
                  mask_token_id=255, eos_token_id=250, pad_token_id=250)
        kw.update(overrides)
        return cls(**kw)


class KVCache(NamedTuple):
    """Rotated keys and raw values of every layer: (n_layers, B, S, n_kv_heads, head_dim)."""

    k: jax.Array
    v: jax.Array


def _ones_param(module, name, dim):
    init = nn.with_logical_partitioning(nn.initializers.ones, (NORM,))
    return module.param(name, init, (dim,), jnp.dtype(module.config.param_dtype))


class RMSNorm(nn.Module):
    config: LLaDAConfig

    @nn.compact
    def __call__(self, x):
        scale = _ones_param(self, "scale", x.shape[-1])
        x32 = x.astype(jnp.float32)
        x32 = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.config.rms_norm_eps)
        return x32.astype(x.dtype) * scale.astype(x.dtype)


def rope_tables(positions_BxL, head_dim, theta, scaling: RopeScaling | None = None):
    """cos/sin tables (B, L, head_dim) in float32, NeoX layout (angles repeated twice)."""
    angles = positions_BxL.astype(jnp.float32)[..., None] * rope.inv_freq(head_dim, theta, scaling)
    angles = jnp.concatenate([angles, angles], axis=-1)
    return jnp.cos(angles), jnp.sin(angles)


def apply_rope(x_BxLxHxD, cos_BxLxR, sin_BxLxR):
    """RoPE on the first R dims of each head (R = rotary dim; the rest pass through)."""
    x = x_BxLxHxD.astype(jnp.float32)
    r = cos_BxLxR.shape[-1]
    x, rest = x[..., :r], x[..., r:]
    rotated = jnp.concatenate([-x[..., r // 2:], x[..., :r // 2]], axis=-1)
    out = x * cos_BxLxR[:, :, None, :] + rotated * sin_BxLxR[:, :, None, :]
    return jnp.concatenate([out, rest], axis=-1).astype(x_BxLxHxD.dtype)


def lm_head(x_BxLxE, head_ExV):
    """Output logits in float32 from the final normed hidden states (compute dtype)."""
    return jnp.einsum("ble,ev->blv", x_BxLxE, head_ExV.astype(x_BxLxE.dtype), preferred_element_type=jnp.float32)


class Block(nn.Module):
    """One pre-norm LLaMA block. Call signature fits `nn.scan`: (carry, *xs) -> (carry, ys)."""

    config: LLaDAConfig
    return_kv: bool = False
    dense_mlp: bool = False  # with config.moe: one of the first_k_dense layers
    pattern: attention_lib.Pattern = attention_lib.BIDIRECTIONAL

    @nn.compact
    def __call__(self, x_BxLxE, key_mask, cos_BxLxD, sin_BxLxD, cache_kv):
        cfg = self.config
        dt = jnp.dtype(cfg.dtype)
        e, h, kvh, d = cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim

        n = RMSNorm(cfg, name="attn_norm")(x_BxLxE)
        q = self.head_projection("q", n, h, HEADS)
        k = self.head_projection("k", n, kvh, KV_HEADS)
        v = self.head_projection("v", n, kvh, KV_HEADS)
        if cfg.qk_norm:
            q, k = RMSNorm(cfg, name="q_norm")(q), RMSNorm(cfg, name="k_norm")(k)
        q, k = apply_rope(q, cos_BxLxD, sin_BxLxD), apply_rope(k, cos_BxLxD, sin_BxLxD)
        new_kv = (k, v) if self.return_kv else None
        if cache_kv is not None:  # cached keys/values of other positions come first
            k = jnp.concatenate([cache_kv[0].astype(dt), k], axis=1)
            v = jnp.concatenate([cache_kv[1].astype(dt), v], axis=1)
        attn = attention_lib.attend(cfg.attention, q, k, v, key_mask, pattern=self.pattern)
        attn_out = project(self, "attn_out", attn, "blhd,hde->ble", (h, d, e), (HEADS, HEAD_DIM, EMBED), n_in=2)
        h_BxLxE = x_BxLxE + attn_out
        h_BxLxE = nn.with_logical_constraint(h_BxLxE, (ACT_BATCH, ACT_LENGTH, ACT_EMBED))

        m = RMSNorm(cfg, name="ff_norm")(h_BxLxE)
        if cfg.moe.enabled and not self.dense_mlp:  # unchunked: it sows its aux losses
            out = h_BxLxE + moe_lib.MoEMLP(cfg, name="moe")(m)
        else:
            mlp_module, mlp_fn = MLPS[cfg.mlp]
            out = h_BxLxE + getattr(importlib.import_module(mlp_module), mlp_fn)(self, m)
        out = nn.with_logical_constraint(out, (ACT_BATCH, ACT_LENGTH, ACT_EMBED))
        return out, new_kv

    def head_projection(self, name, n_BxLxE, heads, axis):
        """`{name}_proj` of the normed input into (B, L, heads, head_dim), plus `{name}_bias`
        when config.qkv_bias."""
        cfg = self.config
        y = project(self, f"{name}_proj", n_BxLxE, "ble,ehd->blhd", (cfg.d_model, heads, cfg.head_dim),
                    (EMBED, axis, HEAD_DIM))
        if cfg.qkv_bias:
            init = nn.with_logical_partitioning(nn.initializers.zeros, (axis, HEAD_DIM))
            y = y + self.param(f"{name}_bias", init, (heads, cfg.head_dim), jnp.dtype(cfg.param_dtype)).astype(y.dtype)
        return y


class LLaDA(nn.Module):
    """Bidirectional mask predictor. `apply({'params': p}, input_ids) -> float32 logits`."""

    config: LLaDAConfig

    @nn.compact
    def __call__(self, input_ids_BxL, attention_mask=None, *, positions=None, kv_cache=None,
                 output_positions=None, return_kv=False, kv_lengths=None, return_hidden=False,
                 attention_pattern=None):
        """Logits for `input_ids_BxL` (B, L).

        attention_mask: (B, S) with 1 for keys that may be attended to and 0 for padding,
          where S = L, or S = cache length + L when `kv_cache` is given (cache keys first).
        positions: (B, L) absolute RoPE positions of the queries; default 0..L-1.
        kv_cache: a `KVCache` of other positions' keys/values, attended to before the
          fresh ones (the sampler's approximate cache).
        output_positions: (B, M) indices into the L query positions whose logits are
          wanted; the output head then runs on M positions only.
        return_kv: also return the `KVCache` of the L fresh positions.
        kv_lengths: (B,) int, instead of `attention_mask` for right padding: keys
          [0, n) are valid (the form cuDNN's kernel takes; the train step uses it).
        return_hidden: return (final normed hidden states (B, L or M, d_model), output
          head (d_model, embedding_size)) instead of the logits, `lm_head` of the two:
          the loss then applies the head chunk by chunk (`diffusion.ChunkedLogits`).
        attention_pattern: an `attention.Pattern` (static) instead of the config's
          (`config.attention_pattern`): BD3-LM's block-diffusion training pattern, or the
          block-cache sampler's bidirectional pass of one block over committed keys.
        Returns float32 logits (B, L or M, embedding_size), plus the KVCache if asked.
        Concrete (not traced) ids outside [0, embedding_size) raise ValueError.
        """
        cfg = self.config
        validation.check_concrete_ids("LLaDA.apply", input_ids_BxL, cfg.embedding_size)
        dt = jnp.dtype(cfg.dtype)
        b, l = input_ids_BxL.shape
        if positions is None:
            positions = jnp.broadcast_to(jnp.arange(l, dtype=jnp.int32), (b, l))
        if attention_mask is not None and kv_lengths is not None:
            raise ValueError("LLaDA: pass attention_mask or kv_lengths, not both")
        pattern = cfg.attention_pattern if attention_pattern is None else attention_pattern
        if (pattern.kind == "causal" or cfg.logit_alignment != "same") and kv_cache is not None:
            raise ValueError("LLaDA: kv_cache needs causal=False and logit_alignment='same' (a shifted "
                             "prediction reads the hidden state of the position before, which a cache lacks)")
        # Which keys the queries may attend to (the same for every query of a row);
        # the causal triangle is the attention implementation's business.
        key_mask = attention_lib.KeyMask(None if attention_mask is None else attention_mask.astype(bool), kv_lengths)

        embedding = param(self, "wte", (cfg.embedding_size, e := cfg.d_model), (VOCAB, EMBED), cfg.init_std)
        x = jnp.take(embedding, input_ids_BxL, axis=0).astype(dt)
        x = nn.with_logical_constraint(x, (ACT_BATCH, ACT_LENGTH, ACT_EMBED))
        cos, sin = rope_tables(positions, cfg.rotary_dim, cfg.rope_theta, cfg.rope_scaling)

        def block_of(looped: bool):  # remat: a loop body is not CSE'd across iterations anyway
            if cfg.remat_policy == "none":
                return Block
            return nn.remat(Block, policy=REMAT_POLICIES[cfg.remat_policy], prevent_cse=not looped)

        cache = None if kv_cache is None else (kv_cache.k, kv_cache.v)
        x, new_kv = stack.layers(cfg, block_of, x, key_mask, cos, sin, cache, return_kv=return_kv, pattern=pattern,
                                 initializing=self.is_initializing())

        # Position i of the output predicts token i, whatever the family's alignment.
        if output_positions is not None:
            source = alignment.source_positions(output_positions, cfg.logit_alignment)
            x = jnp.take_along_axis(x, source[..., None], axis=1)
        else:
            x = alignment.to_targets(x, cfg.logit_alignment)
        x = RMSNorm(cfg, name="ln_f")(x)
        if cfg.weight_tying:
            head = embedding.T
        else:
            head = param(self, "ff_out", (e, cfg.embedding_size), (EMBED, VOCAB), cfg.init_std)
        out = (x, head) if return_hidden else lm_head(x, head)
        if return_kv:
            return out, KVCache(*new_kv)
        return out
