"""The Hugging Face layout of transformers' Llama / Qwen2 / Qwen3 `*ForCausalLM` (and of
Dream, a Qwen2 block): `model.embed_tokens`, `model.layers.{i}.self_attn.{q,k,v,o}_proj`
(biases on q/k/v where the family has them, `q_norm`/`k_norm` for Qwen3),
`model.layers.{i}.mlp.{gate,up,down}_proj`, the two RMSNorms of a layer, `model.norm`
and `lm_head` (absent when tied). Not a family itself: the family files build on it."""

from __future__ import annotations

import dataclasses

from llada_jax.interop import layout
from llada_jax.model import rope
from llada_jax.model.transformer import LLaDAConfig

# config.json fields without a safe default (transformers' defaults are 7B shapes).
REQUIRED_FIELDS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                   "vocab_size", "rms_norm_eps")
# Published features we do not implement, with the only value we accept (absent is fine).
UNSUPPORTED = {"hidden_act": "silu", "mlp_bias": False, "attention_bias": False, "use_sliding_window": False}
_OUR_NAMES = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ff_norm",
              "self_attn.q_proj": "q_proj", "self_attn.k_proj": "k_proj", "self_attn.v_proj": "v_proj",
              "self_attn.o_proj": "attn_out", "mlp.gate_proj": "ff_proj", "mlp.up_proj": "up_proj",
              "mlp.down_proj": "ff_out", "self_attn.q_norm": "q_norm", "self_attn.k_norm": "k_norm"}


def _rope(hf: dict, file: str):
    """(rope_theta, partial_rotary_factor, RopeScaling) from the transformers 4 form of
    config.json (`rope_theta`, `rope_scaling`) or the transformers 5 one (`rope_parameters`)."""
    params = dict(hf.get("rope_parameters") or {})
    scaling = dict(hf.get("rope_scaling") or {})
    if scaling and params.get("rope_type", "default") != "default":
        raise ValueError(f"{file}: holds both rope_scaling and rope_parameters; expected one of them")
    spec = scaling or params
    kind = spec.get("rope_type", spec.get("type", "default"))
    if kind not in rope.ROPE_TYPES:
        raise ValueError(f"{file}: rope_type={kind!r} is not supported (expected one of {rope.ROPE_TYPES})")
    theta = hf.get("rope_theta", params.get("rope_theta"))
    if theta is None:
        raise ValueError(f"{file} is missing rope_theta: expected it at the top level or in rope_parameters")
    fields = {f.name for f in dataclasses.fields(rope.RopeScaling)} - {"rope_type"}
    if kind == "llama3":
        missing = sorted(fields - set(spec))
        if missing:
            raise ValueError(f"{file}: rope_type 'llama3' is missing {missing[0]}")
    unknown = sorted(set(spec) - fields - {"rope_type", "type", "rope_theta", "partial_rotary_factor"})
    if unknown:
        raise ValueError(f"{file}: the RoPE field {unknown[0]!r} is not supported")
    scaling = rope.RopeScaling(rope_type=kind, **{k: spec[k] for k in fields if k in spec})
    return float(theta), float(hf.get("partial_rotary_factor", params.get("partial_rotary_factor", 1.0))), scaling


def config_from_hf(hf: dict, *, family: str, qkv_bias: bool, qk_norm: bool, causal: bool,
                   file: str = "config.json", **overrides) -> LLaDAConfig:
    """LLaDAConfig of `family` from a parsed config.json; logits are "shifted" (the output at i
    predicts token i + 1). The mask id is config.json's `mask_token_id`, else overrides', else
    vocab_size - 1 (an autoregressive vocabulary has none; its last row is a padding or reserved one)."""
    layout.check_hf_fields(hf, REQUIRED_FIELDS, UNSUPPORTED, file=file)
    layers = [t for t in hf.get("layer_types") or [] if t != "full_attention"]
    if layers:
        raise ValueError(f"{file}: layer_types holds {layers[0]!r}; expected only 'full_attention'")
    theta, partial, scaling = _rope(hf, file)
    v = hf["vocab_size"]
    eos = hf.get("eos_token_id")
    eos = (eos[0] if isinstance(eos, list) and eos else eos)
    pad = hf.get("pad_token_id")
    eos = (pad or 0) if eos is None else eos
    kw = dict(family=family, d_model=hf["hidden_size"], n_heads=hf["num_attention_heads"],
              n_kv_heads=hf.get("num_key_value_heads") or hf["num_attention_heads"],
              n_layers=hf["num_hidden_layers"], mlp_hidden_size=hf["intermediate_size"], vocab_size=v,
              embedding_size=v, max_sequence_length=hf.get("max_position_embeddings", 4096),
              rope_theta=theta, partial_rotary_factor=partial, rope_scaling=scaling, rms_norm_eps=float(hf["rms_norm_eps"]),
              mask_token_id=hf.get("mask_token_id", v - 1), eos_token_id=eos,
              pad_token_id=eos if pad is None else pad, weight_tying=bool(hf.get("tie_word_embeddings", False)),
              init_std=hf.get("initializer_range", 0.02), qkv_bias=qkv_bias, qk_norm=qk_norm,
              attention_head_dim=hf.get("head_dim") or 0, causal=causal, logit_alignment="shifted")
    if kw["attention_head_dim"] == kw["d_model"] // kw["n_heads"]:
        kw["attention_head_dim"] = 0
    kw.update(overrides)
    return LLaDAConfig(**kw)


def config_to_hf(config: LLaDAConfig, *, model_type: str, architectures: list, torch_dtype: str,
                 extra: dict | None = None) -> dict:
    """config.json content in transformers' field names."""
    out = dict(
        model_type=model_type, architectures=list(architectures), hidden_size=config.d_model,
        intermediate_size=config.mlp_hidden_size, num_hidden_layers=config.n_layers,
        num_attention_heads=config.n_heads, num_key_value_heads=config.n_kv_heads, head_dim=config.head_dim,
        vocab_size=config.vocab_size, max_position_embeddings=config.max_sequence_length,
        rope_theta=config.rope_theta, rms_norm_eps=config.rms_norm_eps, hidden_act="silu",
        tie_word_embeddings=config.weight_tying, initializer_range=config.init_std,
        bos_token_id=config.eos_token_id, eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id,
        attention_dropout=0.0, use_cache=False, torch_dtype=torch_dtype)
    if config.partial_rotary_factor != 1.0:
        out["partial_rotary_factor"] = config.partial_rotary_factor
    if config.rope_scaling.rope_type != "default":
        out["rope_scaling"] = dataclasses.asdict(config.rope_scaling)
    out.update(extra or {})
    return out


def _hf_names(config: LLaDAConfig) -> dict[str, str]:
    """HF name inside a layer -> our name, for this config's knobs."""
    names = {hf: ours for hf, ours in _OUR_NAMES.items() if config.qk_norm or ours not in ("q_norm", "k_norm")}
    if config.qkv_bias:
        names.update({f"self_attn.{x}_proj.bias": f"{x}_bias" for x in "qkv"})
    return names


def expected_shapes(c: LLaDAConfig) -> dict[str, tuple]:
    e, hd, kd, m, d = c.d_model, c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim, c.mlp_hidden_size, c.head_dim
    block = {"attn_norm": (e,), "q_proj": (hd, e), "k_proj": (kd, e), "v_proj": (kd, e), "attn_out": (e, hd),
             "ff_norm": (e,), "ff_proj": (m, e), "up_proj": (m, e), "ff_out": (e, m), "q_norm": (d,), "k_norm": (d,),
             "q_bias": (hd,), "k_bias": (kd,), "v_bias": (kd,)}
    shapes = {"model.embed_tokens.weight": (c.embedding_size, e)}
    for i in range(c.n_layers):
        for hf, ours in _hf_names(c).items():
            suffix = "" if hf.endswith(".bias") else ".weight"
            shapes[f"model.layers.{i}.{hf}{suffix}"] = block[ours]
    shapes["model.norm.weight"] = (e,)
    if not c.weight_tying:
        shapes["lm_head.weight"] = (c.embedding_size, e)
    return shapes


def tensor_map(config: LLaDAConfig):
    """(hf name, our path, layer index or None, to_torch, from_torch) for every tensor."""
    ident = lambda w: w  # noqa: E731
    h, k, d = config.n_heads, config.n_kv_heads, config.head_dim
    maps = dict(layout._block_maps(config), q_norm=(ident, ident), k_norm=(ident, ident),
                q_bias=(lambda w: w.reshape(h * d), lambda w: w.reshape(h, d)),
                k_bias=(lambda w: w.reshape(k * d), lambda w: w.reshape(k, d)),
                v_bias=(lambda w: w.reshape(k * d), lambda w: w.reshape(k, d)))
    yield "model.embed_tokens.weight", ("wte",), None, ident, ident
    for i in range(config.n_layers):
        for hf, ours in _hf_names(config).items():
            path, idx = layout.block_path(config, i, ours)
            suffix = "" if hf.endswith(".bias") else ".weight"
            yield f"model.layers.{i}.{hf}{suffix}", path, idx, *maps[ours]
    yield "model.norm.weight", ("ln_f", "scale"), None, ident, ident
    if not config.weight_tying:
        yield "lm_head.weight", ("ff_out",), None, layout._t, layout._t


def peft_module(config, i, name):
    inverse = {ours: hf for hf, ours in _OUR_NAMES.items()}
    return f"model.layers.{i}.{inverse[name]}"
