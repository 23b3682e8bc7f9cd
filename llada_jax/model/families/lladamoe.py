"""LLaDA-MoE-7B-A1B (inclusionAI/LLaDA-MoE-7B-A1B-Base and -Instruct): LLaDA's bidirectional
block with q/k RMS norms and a sparse MoE MLP, logits aligned with their positions (LLaDA's
sampler and likelihood), as the published modeling file (`modeling_lladamoe.py`, ZHZisZZ/dllm
`dllm/pipelines/llada/models/`, shipped with the checkpoints) defines it:

- q_norm / k_norm: RMSNorm over head_dim (one weight for all heads) before RoPE;
- `LLaDAMoESparseMoeBlock`: softmax of the router (`mlp.gate`), plus `mlp.expert_bias` when
  moe_router_enable_expert_bias (added to the scores that choose and weigh: expert_bias
  "weights"), top num_experts_per_tok, never renormalised (the block sets
  norm_topk_prob = False whatever config.json says; moe_router_score_function,
  routed_scaling_factor and router_num_group are read by the config but unused), experts
  `mlp.experts.{j}.{gate,up,down}_proj`, plus `shared_expert.*` when
  shared_expert_intermediate_size is set;
- moe_layer_freq[i] 0: a dense MLP (`mlp.{gate,up,down}_proj`, dense_intermediate_size) in
  layer i; we take the form [0] * k + [1] * (n - k) (`MoEConfig.first_k_dense` = k).

The layout is transformers' (`model.embed_tokens`, `model.layers.{i}.self_attn.*`,
`model.norm`, `lm_head`). An export's config.json has model_type "lladamoe" and ships our
PyTorch code as `modeling_lladamoe.py` (`llada_jax.interop.torch_families`: `LLaDAMoEConfig`,
`LLaDAMoEModelLM`, the published class names), so `AutoModel.from_pretrained(export,
trust_remote_code=True)` loads it. The published hub config.json says model_type "llada": its
architectures (`LLaDAMoEModelLM`) name this family.
"""

from __future__ import annotations

from llada_jax.interop import layout
from llada_jax.model import rope
from llada_jax.model.moe import MoEConfig
from llada_jax.model.transformer import LLaDA, LLaDAConfig

SAMPLER = "llada"
HF_MODEL_TYPES = ("lladamoe",)
HF_ARCHITECTURES = ("LLaDAMoEModelLM",)
MODELING_FILES = {"modeling_lladamoe.py": layout.FAMILIES_MODELING_SOURCE}
AUTO_MAP = {"AutoConfig": "modeling_lladamoe.LLaDAMoEConfig", "AutoModel": "modeling_lladamoe.LLaDAMoEModelLM",
            "AutoModelForCausalLM": "modeling_lladamoe.LLaDAMoEModelLM"}
REQUIRED_FIELDS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size", "num_experts",
                   "num_experts_per_tok", "expert_intermediate_size", "moe_layer_freq", "rope_theta", "rms_norm_eps")
UNSUPPORTED = {"hidden_act": "silu", "attention_bias": False, "clip_qkv": None, "rope_scaling": None}
PUBLISHED_MASK_ID = 156895  # <|mask|> of the published tokenizer (vocabulary 157184)
_ATTN = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ff_norm", "self_attn.q_proj": "q_proj",
         "self_attn.k_proj": "k_proj", "self_attn.v_proj": "v_proj", "self_attn.o_proj": "attn_out",
         "self_attn.q_norm": "q_norm", "self_attn.k_norm": "k_norm"}
_DENSE = {"mlp.gate_proj": "ff_proj", "mlp.up_proj": "up_proj", "mlp.down_proj": "ff_out"}
_SHARED = {"shared_expert.gate_proj": "shared_gate", "shared_expert.up_proj": "shared_up",
           "shared_expert.down_proj": "shared_down"}
_EXPERT = {"gate_proj": "experts_gate", "up_proj": "experts_up", "down_proj": "experts_down"}


def build(config):
    return LLaDA(config)


def config_from_hf(hf: dict, file: str = "config.json", **overrides) -> LLaDAConfig:
    layout.check_hf_fields(hf, REQUIRED_FIELDS, UNSUPPORTED, file=file)
    n, freq = hf["num_hidden_layers"], hf["moe_layer_freq"]
    k = sum(1 for f in freq if f == 0) if isinstance(freq, list) else -1
    if not isinstance(freq, list) or len(freq) != n or list(freq) != [0] * k + [1] * (n - k) or k == n:
        raise ValueError(f"{file}: moe_layer_freq={freq!r}: expected {n} entries, 0 (dense) for the first layers "
                         f"then 1 (MoE), at least one MoE layer")
    partial = hf.get("partial_rotary_factor")
    partial = 1.0 if partial in (None, -1) else float(partial)
    v = hf["vocab_size"]
    mask = hf.get("mask_token_id", PUBLISHED_MASK_ID if v > PUBLISHED_MASK_ID else None)
    if mask is None and "mask_token_id" not in overrides:
        raise ValueError(f"{file} is missing mask_token_id (vocab_size={v} is not the published tokenizer's)")
    eos = hf.get("eos_token_id")
    eos = eos[0] if isinstance(eos, list) and eos else eos
    pad = hf.get("pad_token_id")
    moe = MoEConfig(num_experts=hf["num_experts"], num_experts_per_tok=hf["num_experts_per_tok"],
                    expert_hidden_size=hf["expert_intermediate_size"],
                    shared_hidden_size=hf.get("shared_expert_intermediate_size") or 0,
                    expert_bias="weights" if hf.get("moe_router_enable_expert_bias") else "none",
                    first_k_dense=k, load_balance_weight=float(hf.get("router_aux_loss_coef", 0.01)))
    dense = hf.get("dense_intermediate_size")
    kw = dict(family="lladamoe", d_model=hf["hidden_size"], n_heads=hf["num_attention_heads"],
              n_kv_heads=hf.get("num_key_value_heads") or hf["num_attention_heads"], n_layers=n,
              mlp_hidden_size=dense if isinstance(dense, int) and dense > 0 else hf["expert_intermediate_size"],
              vocab_size=v, embedding_size=v, max_sequence_length=hf.get("max_position_embeddings", 4096),
              rope_theta=float(hf["rope_theta"]), partial_rotary_factor=partial,
              rms_norm_eps=float(hf["rms_norm_eps"]), mask_token_id=mask,
              eos_token_id=pad if eos is None else eos, pad_token_id=eos if pad is None else pad,
              weight_tying=bool(hf.get("tie_word_embeddings", False)), init_std=hf.get("initializer_range", 0.02),
              qk_norm=bool(hf.get("qk_layernorm")), moe=moe)
    kw.update(overrides)
    return LLaDAConfig(**kw)


def config_to_hf(config: LLaDAConfig, torch_dtype: str = "bfloat16") -> dict:
    rope.require_default(config.rope_scaling, "lladamoe")
    m = config.moe
    return dict(
        model_type=HF_MODEL_TYPES[0], architectures=list(HF_ARCHITECTURES), auto_map=dict(AUTO_MAP),
        vocab_size=config.vocab_size, hidden_size=config.d_model, dense_intermediate_size=config.mlp_hidden_size,
        expert_intermediate_size=m.expert_hidden_size or config.mlp_hidden_size,
        shared_expert_intermediate_size=m.shared_hidden_size or None, num_hidden_layers=config.n_layers,
        num_attention_heads=config.n_heads, num_key_value_heads=config.n_kv_heads, hidden_act="silu",
        max_position_embeddings=config.max_sequence_length, initializer_range=config.init_std,
        rms_norm_eps=config.rms_norm_eps, use_cache=False, pad_token_id=config.pad_token_id, bos_token_id=None,
        eos_token_id=config.eos_token_id, mask_token_id=config.mask_token_id, tie_word_embeddings=config.weight_tying,
        rope_theta=config.rope_theta, partial_rotary_factor=config.partial_rotary_factor, rope_scaling=None,
        attention_bias=False, attention_dropout=0.0, clip_qkv=None, num_experts_per_tok=m.num_experts_per_tok,
        num_experts=m.num_experts, output_router_logits=False, router_aux_loss_coef=m.load_balance_weight,
        norm_topk_prob=False, qk_layernorm=config.qk_norm,
        moe_layer_freq=[0] * m.first_k_dense + [1] * (config.n_layers - m.first_k_dense),
        moe_router_enable_expert_bias=m.expert_bias == "weights", moe_router_score_function="softmax",
        routed_scaling_factor=1, router_num_group=-2, router_topk_group=-2, torch_dtype=torch_dtype)


def check(config: LLaDAConfig):
    """What the published block can express (ValueError naming the field otherwise)."""
    m = config.moe
    for field, want in (("score_function", "softmax"), ("n_group", 1), ("norm_topk_prob", False),
                        ("routed_scaling_factor", 1.0)):
        if getattr(m, field) != want:
            raise ValueError(f"LLaDAConfig.moe.{field}={getattr(m, field)!r}: the lladamoe layout expects {want!r}")
    if not m.enabled or m.expert_bias == "selection" or config.qkv_bias or config.logit_alignment != "same":
        raise ValueError("LLaDAConfig: the lladamoe family expects moe.num_experts > 0, expert_bias 'none' or "
                         "'weights', no qkv_bias and logit_alignment 'same'")


def block_path(config, i, name):
    """(our path, stacked index or None) of block i's weight `name` (`layout.block_path`); None
    for the dense MLP's names in an MoE layer (they exist in the first_k_dense layers only)."""
    if name in _DENSE.values() and i >= config.moe.first_k_dense:
        return None
    return _layer(config, i, name)


def _layer(config, i, name, extra=()):
    """(our path, stacked index or None) of `name` (under the MoE module: extra=("moe",))."""
    k = config.moe.first_k_dense
    leaf = (name, "scale") if name.endswith("norm") else (name,)
    if not config.scan_layers:
        return (f"blocks_{i}",) + tuple(extra) + leaf, None
    return (("dense_blocks", i) if i < k else ("blocks", i - k))[0:1] + tuple(extra) + leaf, (i if i < k else i - k)


def _entries(c: LLaDAConfig):
    """(hf name, HF shape, our path, index, to_torch, from_torch) of every tensor."""
    ident, t = (lambda w: w), layout._t  # noqa: E731
    e, m = c.d_model, c.moe
    maps = layout._block_maps(c)
    hd, kd, d = c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim, c.head_dim
    shape = {"attn_norm": (e,), "ff_norm": (e,), "q_proj": (hd, e), "k_proj": (kd, e), "v_proj": (kd, e),
             "attn_out": (e, hd), "q_norm": (d,), "k_norm": (d,)}
    yield "model.embed_tokens.weight", (c.embedding_size, e), ("wte",), None, ident, ident
    for i in range(c.n_layers):
        p = f"model.layers.{i}."
        for hf, ours in _ATTN.items():
            if c.qk_norm or ours not in ("q_norm", "k_norm"):
                yield (p + hf + ".weight", shape[ours], *_layer(c, i, ours),
                       *(maps.get(ours) or (ident, ident)))
        yield from mlp_entries(c, i, p, expert_bias="mlp.expert_bias" if m.expert_bias != "none" else None,
                               shared=_SHARED)
    yield "model.norm.weight", (e,), ("ln_f", "scale"), None, ident, ident
    if not c.weight_tying:
        yield "lm_head.weight", (c.embedding_size, e), ("ff_out",), None, t, t


def mlp_entries(c: LLaDAConfig, i: int, prefix: str, *, expert_bias: str | None, shared: dict):
    """Block i's MLP tensors, as `_entries` gives them: the dense SwiGLU of a first_k_dense
    layer, else the router (`mlp.gate`), the expert bias (HF name `expert_bias`; None: none),
    every expert (`mlp.experts.{j}.*`) and the shared expert (HF names `shared`). LLaDA-MoE's
    and LLaDA 2.x's layouts differ only in those two names."""
    ident, t = (lambda w: w), layout._t  # noqa: E731
    e, f, m = c.d_model, c.mlp_hidden_size, c.moe
    x, hid, s = m.num_experts, m.expert_hidden_size or f, m.shared_hidden_size
    if i < m.first_k_dense:
        dense = {"ff_proj": (f, e), "up_proj": (f, e), "ff_out": (e, f)}
        for hf, ours in _DENSE.items():
            yield prefix + hf + ".weight", dense[ours], *_layer(c, i, ours), t, t
        return
    yield prefix + "mlp.gate.weight", (x, e), *_layer(c, i, "router", ("moe",)), t, t
    if expert_bias:
        yield prefix + expert_bias, (x,), *_layer(c, i, "expert_bias", ("moe",)), ident, ident
    for j in range(x):
        for hf, ours in _EXPERT.items():
            path, idx = _layer(c, i, ours, ("moe",))
            idx = (j,) if idx is None else (idx, j)
            yield f"{prefix}mlp.experts.{j}.{hf}.weight", (e, hid) if hf == "down_proj" else (hid, e), path, idx, t, t
    if s:
        sizes = {"shared_gate": (s, e), "shared_up": (s, e), "shared_down": (e, s)}
        for hf, ours in shared.items():
            yield prefix + hf + ".weight", sizes[ours], *_layer(c, i, ours, ("moe",)), t, t


def expected_shapes(config: LLaDAConfig) -> dict[str, tuple]:
    return {name: shape for name, shape, *_ in _entries(config)}


def tensor_map(config: LLaDAConfig):
    """(hf name, our path, index (layer, or (layer, expert)) or None, to_torch, from_torch)."""
    check(config)
    for name, _, path, idx, to_t, from_t in _entries(config):
        yield name, path, idx, to_t, from_t


def peft_module(config, i, name):
    """PEFT name of block i's `name`: the published module (`model.layers.{i}.self_attn.q_proj`,
    `model.layers.{i}.mlp.gate_proj` of a dense layer)."""
    inverse = {ours: hf for hf, ours in {**_ATTN, **_DENSE}.items()}
    return f"model.layers.{i}.{inverse[name]}"
