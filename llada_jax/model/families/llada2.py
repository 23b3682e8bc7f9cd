"""LLaDA 2.x (inclusionAI/LLaDA2.0-mini, LLaDA2.0-flash, LLaDA2.1-mini): a block-causal
(block diffusion) MoE with q/k RMS norms and partial RoPE, logits aligned with their
positions, as the published modeling file (`modeling_llada2_moe.py`, ZHZisZZ/dllm
`dllm/pipelines/llada2/models/`, shipped with the checkpoints; 2.1's
`dllm/pipelines/llada21/models/`, model_type "llada21_moe", has the same layout and forward:
it is imported as this family, exported as model_type "llada2_moe"; 2.1's token-editing
`generate` (editing_threshold, max_post_steps) is not ours) defines it:

- attention: one fused `attention.query_key_value` ([q heads; k heads; v heads] x head_dim
  rows), `attention.query_layernorm` / `key_layernorm` (RMSNorm over head_dim, before RoPE),
  RoPE on the first head_dim * partial_rotary_factor dims (rotate-half), `attention.dense`;
  use_qkv_bias and use_bias (the published default is True) must be false, as LLaDA2.0-mini's are;
- `LLaDA2MoeSparseMoeBlock`: sigmoid of the router (`mlp.gate.weight`), experts chosen by
  scores + `mlp.gate.expert_bias` within the topk_group best of n_group groups (a group scores
  its two best), weighed by the unbiased scores renormalised (when num_experts_per_tok > 1)
  times routed_scaling_factor (`MoEConfig` expert_bias "selection"; the published gate reads
  neither score_function nor norm_topk_prob of config.json), experts
  `mlp.experts.{j}.{gate,up,down}_proj`, plus `mlp.shared_experts.*` of width
  moe_intermediate_size * num_shared_experts;
- the first first_k_dense_replace layers: a dense MLP (`mlp.{gate,up,down}_proj`, intermediate_size);
- attention is block-causal: a block of `block_size` tokens (from index 0) sees its own and the
  earlier blocks (the published `generate` builds that mask; its block_length is ours). config.json
  has no block size: we read and write `block_size` there (default 32, `generate`'s default).

Sample it with `llada_jax.generate` (the block-cache sampler, `llada_jax.sampling.block_cache`:
LLaDA 2.x's `generate`). The layout is `model.word_embeddings`, `model.layers.{i}.*`,
`model.norm`, `lm_head`. An export ships no modeling file: its config.json's auto_map names the
published files (`configuration_llada2_moe.py`, `modeling_llada2_moe.py`), which are copied in
from the published checkpoint to load it with `trust_remote_code=True`.
"""

from __future__ import annotations

import numpy as np

from llada_jax.interop import layout
from llada_jax.model import rope
from llada_jax.model.families import lladamoe
from llada_jax.model.families.lladamoe import _layer
from llada_jax.model.moe import MoEConfig
from llada_jax.model.transformer import LLaDA, LLaDAConfig

SAMPLER = "llada"  # a block-causal model: LLaDA's entry runs the block cache (llada_jax.sampling)
HF_MODEL_TYPES = ("llada2_moe", "llada21_moe")  # 2.1: the same tensors and forward (export writes 2.0's)
HF_ARCHITECTURES = ("LLaDA2MoeModelLM",)
MODELING_FILES: dict = {}  # the published modeling file is not shipped (auto_map names it)
AUTO_MAP = {"AutoConfig": "configuration_llada2_moe.LLaDA2MoeConfig",
            "AutoModel": "modeling_llada2_moe.LLaDA2MoeModel",
            "AutoModelForCausalLM": "modeling_llada2_moe.LLaDA2MoeModelLM"}
REQUIRED_FIELDS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size", "num_experts",
                   "num_experts_per_tok", "moe_intermediate_size", "rope_theta", "rms_norm_eps")
UNSUPPORTED = {"hidden_act": "silu", "use_qkv_bias": False, "rope_scaling": None, "norm_head": False,
               "use_sliding_window": False}
PUBLISHED_MASK_ID, PUBLISHED_EOS_ID = 156895, 156892  # the published generate's defaults (vocabulary 157184)
DEFAULT_BLOCK = 32
_ATTN = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ff_norm", "attention.dense": "attn_out",
         "attention.query_layernorm": "q_norm", "attention.key_layernorm": "k_norm"}
_DENSE = {"mlp.gate_proj": "ff_proj", "mlp.up_proj": "up_proj", "mlp.down_proj": "ff_out"}
_SHARED = {"mlp.shared_experts.gate_proj": "shared_gate", "mlp.shared_experts.up_proj": "shared_up",
           "mlp.shared_experts.down_proj": "shared_down"}


def build(config):
    return LLaDA(config)


def config_from_hf(hf: dict, file: str = "config.json", **overrides) -> LLaDAConfig:
    layout.check_hf_fields(hf, REQUIRED_FIELDS, UNSUPPORTED, file=file)
    if hf.get("use_bias", True) is not False:  # the published default is True: a bias on attention.dense
        raise ValueError(f"{file}: use_bias={hf.get('use_bias', True)!r} is not supported (expected False; "
                         f"the published code's default, True, applies when the field is absent)")
    n, k = hf["num_hidden_layers"], hf.get("first_k_dense_replace", 0)
    if not isinstance(k, int) or not 0 <= k < n:
        raise ValueError(f"{file}: first_k_dense_replace={k!r}: expected an integer in [0, {n}) "
                         f"(num_hidden_layers={n}; at least one MoE layer)")
    shared = hf.get("num_shared_experts")
    if shared is not None and (not isinstance(shared, int) or shared < 1):
        raise ValueError(f"{file}: num_shared_experts={shared!r}: expected null or an integer >= 1")
    if k and not hf.get("intermediate_size"):
        raise ValueError(f"{file} is missing intermediate_size: expected the dense MLP width of the first "
                         f"first_k_dense_replace={k} layers")
    partial = hf.get("partial_rotary_factor", 0.5)
    partial = 1.0 if partial is None else float(partial)
    heads = hf["num_attention_heads"]
    head_dim = hf.get("head_dim") or hf["hidden_size"] // heads
    v = hf["vocab_size"]
    mask = hf.get("mask_token_id", PUBLISHED_MASK_ID if v > PUBLISHED_MASK_ID else None)
    if mask is None and "mask_token_id" not in overrides:
        raise ValueError(f"{file} is missing mask_token_id (vocab_size={v} is not the published tokenizer's)")
    eos = hf.get("eos_token_id", PUBLISHED_EOS_ID if v > PUBLISHED_EOS_ID else None)
    eos = eos[0] if isinstance(eos, list) and eos else eos
    pad = hf.get("pad_token_id")
    top = hf["num_experts_per_tok"]
    moe_hidden = hf["moe_intermediate_size"]
    moe = MoEConfig(num_experts=hf["num_experts"], num_experts_per_tok=top, expert_hidden_size=moe_hidden,
                    shared_hidden_size=moe_hidden * shared if shared else 0, score_function="sigmoid",
                    expert_bias="selection", n_group=hf.get("n_group", 8), topk_group=hf.get("topk_group", 4),
                    norm_topk_prob=top > 1, routed_scaling_factor=float(hf.get("routed_scaling_factor", 2.5)),
                    first_k_dense=k)
    block = hf.get("block_size", DEFAULT_BLOCK)
    kw = dict(family="llada2", d_model=hf["hidden_size"], n_heads=heads,
              n_kv_heads=hf.get("num_key_value_heads") or heads, n_layers=n,
              attention_head_dim=0 if head_dim * heads == hf["hidden_size"] else head_dim,
              mlp_hidden_size=hf.get("intermediate_size") or moe_hidden, vocab_size=v, embedding_size=v,
              max_sequence_length=hf.get("max_position_embeddings", 16384), rope_theta=float(hf["rope_theta"]),
              partial_rotary_factor=partial, rms_norm_eps=float(hf["rms_norm_eps"]), mask_token_id=mask,
              eos_token_id=pad if eos is None else eos, pad_token_id=eos if pad is None else pad,
              weight_tying=bool(hf.get("tie_word_embeddings", False)), init_std=hf.get("initializer_range", 0.02),
              qk_norm=bool(hf.get("use_qk_norm", True)), block_size=block, moe=moe)
    kw.update(overrides)
    return LLaDAConfig(**kw)


def config_to_hf(config: LLaDAConfig, torch_dtype: str = "bfloat16") -> dict:
    rope.require_default(config.rope_scaling, "llada2")
    check(config)
    m = config.moe
    return dict(
        model_type=HF_MODEL_TYPES[0], architectures=list(HF_ARCHITECTURES), auto_map=dict(AUTO_MAP),
        vocab_size=config.vocab_size, hidden_size=config.d_model, intermediate_size=config.mlp_hidden_size,
        moe_intermediate_size=m.expert_hidden_size or config.mlp_hidden_size, num_hidden_layers=config.n_layers,
        num_attention_heads=config.n_heads, num_key_value_heads=config.n_kv_heads, head_dim=config.head_dim,
        hidden_act="silu", use_qkv_bias=False, use_qk_norm=config.qk_norm, use_bias=False,
        rms_norm_eps=config.rms_norm_eps, norm_head=False, tie_word_embeddings=config.weight_tying,
        embedding_dropout=0.0, attention_dropout=0.0, output_dropout=0.0, initializer_range=config.init_std,
        max_position_embeddings=config.max_sequence_length, rope_theta=config.rope_theta, use_cache=False,
        use_sliding_window=False, sliding_window=4096, max_window_layers=28, rope_scaling=None,
        pad_token_id=config.pad_token_id,
        eos_token_id=config.eos_token_id, num_experts=m.num_experts,
        num_shared_experts=(m.shared_hidden_size // (m.expert_hidden_size or config.mlp_hidden_size)
                            if m.shared_hidden_size else None),
        num_experts_per_tok=m.num_experts_per_tok, n_group=m.n_group, topk_group=m.topk_group,
        routed_scaling_factor=m.routed_scaling_factor, first_k_dense_replace=m.first_k_dense,
        output_router_logits=False, partial_rotary_factor=config.partial_rotary_factor, score_function="sigmoid",
        norm_topk_prob=m.norm_topk_prob, moe_router_enable_expert_bias=True, mask_token_id=config.mask_token_id,
        block_size=config.block_size, torch_dtype=torch_dtype)


def check(config: LLaDAConfig):
    """What the published block can express (ValueError naming the field otherwise)."""
    m = config.moe
    for field, want in (("score_function", "sigmoid"), ("expert_bias", "selection"),
                        ("norm_topk_prob", m.num_experts_per_tok > 1)):
        if getattr(m, field) != want:
            raise ValueError(f"LLaDAConfig.moe.{field}={getattr(m, field)!r}: the llada2 layout expects {want!r}")
    if m.shared_hidden_size and m.shared_hidden_size % (m.expert_hidden_size or config.mlp_hidden_size):
        raise ValueError(f"LLaDAConfig.moe.shared_hidden_size={m.shared_hidden_size}: the llada2 layout expects a "
                         f"multiple of expert_hidden_size (num_shared_experts experts)")
    if not m.enabled or config.qkv_bias or config.logit_alignment != "same":
        raise ValueError("LLaDAConfig: the llada2 family expects moe.num_experts > 0, no qkv_bias and "
                         "logit_alignment 'same'")


def block_path(config, i, name):
    """(our path, stacked index or None) of block i's weight `name`; None for the dense MLP's
    names in an MoE layer (they exist in the first_k_dense layers only)."""
    if name in _DENSE.values() and i >= config.moe.first_k_dense:
        return None
    return _layer(config, i, name)


def _qkv_maps(c: LLaDAConfig):
    """(to_torch, from_torch) of the fused query_key_value: our (q, k, v) <-> its rows."""
    maps = layout._block_maps(c)
    rows = np.cumsum([c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim])
    names = ("q_proj", "k_proj", "v_proj")

    def to_torch(qkv):
        return np.concatenate([np.asarray(maps[n][0](w)) for n, w in zip(names, qkv)], axis=0)

    def from_torch(w):
        return tuple(maps[n][1](part) for n, part in zip(names, np.split(w, rows, axis=0)))
    return to_torch, from_torch


def _entries(c: LLaDAConfig):
    """(hf name, HF shape, our path (a tuple of paths when fused), index, to_torch, from_torch)."""
    ident, t = (lambda w: w), layout._t  # noqa: E731
    e = c.d_model
    maps = layout._block_maps(c)
    hd, kd, d = c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim, c.head_dim
    shape = {"attn_norm": (e,), "ff_norm": (e,), "attn_out": (e, hd), "q_norm": (d,), "k_norm": (d,)}
    qkv_to, qkv_from = _qkv_maps(c)
    yield "model.word_embeddings.weight", (c.embedding_size, e), ("wte",), None, ident, ident
    for i in range(c.n_layers):
        p = f"model.layers.{i}."
        q, k, v = (_layer(c, i, n) for n in ("q_proj", "k_proj", "v_proj"))
        yield p + "attention.query_key_value.weight", (hd + 2 * kd, e), (q[0], k[0], v[0]), q[1], qkv_to, qkv_from
        for hf, ours in _ATTN.items():
            if c.qk_norm or ours not in ("q_norm", "k_norm"):
                yield (p + hf + ".weight", shape[ours], *_layer(c, i, ours), *(maps.get(ours) or (ident, ident)))
        yield from lladamoe.mlp_entries(c, i, p, expert_bias="mlp.gate.expert_bias", shared=_SHARED)
    yield "model.norm.weight", (e,), ("ln_f", "scale"), None, ident, ident
    if not c.weight_tying:
        yield "lm_head.weight", (c.embedding_size, e), ("ff_out",), None, t, t


def expected_shapes(config: LLaDAConfig) -> dict[str, tuple]:
    return {name: shape for name, shape, *_ in _entries(config)}


def tensor_map(config: LLaDAConfig):
    """(hf name, our path (fused query_key_value: the q, k, v paths), index, to_torch, from_torch)."""
    check(config)
    for name, _, path, idx, to_t, from_t in _entries(config):
        yield name, path, idx, to_t, from_t


def peft_module(config, i, name):
    """PEFT name of block i's `name`: the published module (`model.layers.{i}.attention.dense`,
    `model.layers.{i}.mlp.gate_proj` of a dense layer). q/k/v live in one fused
    `attention.query_key_value`, which PEFT cannot adapt per projection: ValueError."""
    inverse = {ours: hf for hf, ours in {**_ATTN, **_DENSE}.items()}
    if name not in inverse:
        raise ValueError(f"LoRA target {name!r}: the llada2 layout fuses q/k/v into attention.query_key_value, "
                         f"so a PEFT adapter cannot be written for it; merge the adapters (merge_lora) instead")
    return f"model.layers.{i}.{inverse[name]}"
