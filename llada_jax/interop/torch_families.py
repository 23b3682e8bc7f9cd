"""Dream and LLaDA-MoE in plain PyTorch, with the published module names: our own code, shipped
in an export as the family's modeling file (`modeling_dream.py`, `modeling_lladamoe.py`) so that
`transformers.AutoModel.from_pretrained(export_dir, trust_remote_code=True)` loads it.

The same math as `llada_jax.model` for these families: pre-norm LLaMA blocks without a causal
mask, RMSNorm and RoPE ("rotate half", on the first rotary_dim channels) in float32, grouped-query
attention, SwiGLU, and
- Dream (`DreamConfig`, `DreamModel`): the Qwen2 block (biases on q/k/v); its logits are the
  published model's, shifted: the logit at i predicts token i + 1. `diffusion_generate` is
  Dream's sampler (`dream_generate`).
- LLaDA-MoE (`LLaDAMoEConfig`, `LLaDAMoEModelLM`): q/k RMSNorms over head_dim, and per layer
  either a dense MLP (`moe_layer_freq` 0) or the sparse MoE block: softmax router (`mlp.gate`),
  plus `mlp.expert_bias` when moe_router_enable_expert_bias (added to the scores that choose and
  weigh), the top num_experts_per_tok experts, weights not renormalised, plus `shared_expert`
  when shared_expert_intermediate_size is set. The logit at i predicts token i.
attention_mask (B, L), 1 = real token: keys at 0 get a large finite negative score (a row of
padding keys gives a uniform softmax, not NaN, as the JAX model). position_ids (B, L): RoPE
positions (Dream's sampler passes them for left padding); default 0 .. L-1. Only the default
RoPE (no rope_scaling) is implemented; another is refused when the model is built.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
import transformers
from torch import nn
from transformers.modeling_outputs import MaskedLMOutput

MASK_VALUE = -1e30  # finite, as in the JAX model


def _get(config, name, default=None):
    value = getattr(config, name, None)
    return default if value is None else value


def _rope_theta(config) -> float:
    """config.json's rope_theta (transformers 5 may move it into rope_parameters)."""
    theta = getattr(config, "rope_theta", None)
    params = getattr(config, "rope_parameters", None) or {}
    scaling = getattr(config, "rope_scaling", None) or {}
    kind = scaling.get("rope_type", scaling.get("type", params.get("rope_type", "default")))
    if kind != "default":
        raise ValueError(f"config rope_type={kind!r} is not supported by this modeling file (expected 'default')")
    return float(theta if theta is not None else params["rope_theta"])


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.variance_epsilon = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
        return self.weight * x32.to(x.dtype)


def rope_tables(position_ids, rotary_dim: int, theta: float):
    """cos/sin (B, 1, L, rotary_dim) in float32, angles repeated over the two halves."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, rotary_dim, 2, dtype=torch.float32,
                                             device=position_ids.device) / rotary_dim))
    angles = position_ids.float()[..., None] * inv_freq
    angles = torch.cat([angles, angles], dim=-1)[:, None]
    return angles.cos(), angles.sin()


def apply_rope(x, cos, sin):
    """x (B, H, L, D): its first rotary_dim channels rotated in float32, the rest passed."""
    r = cos.shape[-1]
    x32, rest = x[..., :r].float(), x[..., r:]
    half = r // 2
    rotated = torch.cat([-x32[..., half:], x32[..., :half]], dim=-1)
    return torch.cat([(x32 * cos + rotated * sin).to(x.dtype), rest], dim=-1)


class Attention(nn.Module):
    def __init__(self, config, qkv_bias: bool, qk_norm: bool):
        super().__init__()
        e, self.h = config.hidden_size, config.num_attention_heads
        self.kv = _get(config, "num_key_value_heads", self.h)
        self.d = _get(config, "head_dim", e // self.h)
        self.q_proj = nn.Linear(e, self.h * self.d, bias=qkv_bias)
        self.k_proj = nn.Linear(e, self.kv * self.d, bias=qkv_bias)
        self.v_proj = nn.Linear(e, self.kv * self.d, bias=qkv_bias)
        self.o_proj = nn.Linear(self.h * self.d, e, bias=False)
        if qk_norm:
            self.q_norm = RMSNorm(self.d, config.rms_norm_eps)
            self.k_norm = RMSNorm(self.d, config.rms_norm_eps)

    def forward(self, x, allowed, cos, sin):
        b, length, _ = x.shape
        q = self.q_proj(x).view(b, length, self.h, self.d)
        k = self.k_proj(x).view(b, length, self.kv, self.d)
        v = self.v_proj(x).view(b, length, self.kv, self.d).transpose(1, 2)
        if hasattr(self, "q_norm"):
            q, k = self.q_norm(q), self.k_norm(k)
        q, k = apply_rope(q.transpose(1, 2), cos, sin), apply_rope(k.transpose(1, 2), cos, sin)
        if self.kv < self.h:  # key/value head j serves query heads j*g .. j*g+g-1
            k, v = k.repeat_interleave(self.h // self.kv, dim=1), v.repeat_interleave(self.h // self.kv, dim=1)
        scores = torch.matmul(q.float(), k.float().transpose(-1, -2)) / math.sqrt(self.d)
        if allowed is not None:
            scores = scores.masked_fill(~allowed, MASK_VALUE)
        probs = scores.softmax(dim=-1).to(v.dtype)
        return self.o_proj(torch.matmul(probs, v).transpose(1, 2).reshape(b, length, self.h * self.d))


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, e: int, hidden: int):
        super().__init__()
        self.gate_proj = nn.Linear(e, hidden, bias=False)
        self.up_proj = nn.Linear(e, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, e, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class SparseMoeBlock(nn.Module):
    """LLaDA-MoE's routed experts (see the module docstring for the routing)."""

    def __init__(self, config):
        super().__init__()
        self.top_k = config.num_experts_per_tok
        self.gate = nn.Linear(config.hidden_size, config.num_experts, bias=False)
        self.experts = nn.ModuleList([MLP(config.hidden_size, config.expert_intermediate_size)
                                      for _ in range(config.num_experts)])
        if _get(config, "moe_router_enable_expert_bias", False):
            self.register_buffer("expert_bias", torch.zeros(config.num_experts))

    def forward(self, x):
        b, length, e = x.shape
        x = x.reshape(-1, e)
        scores = F.softmax(self.gate(x).float(), dim=-1)
        if hasattr(self, "expert_bias"):
            scores = scores + self.expert_bias.float()
        weights, chosen = torch.topk(scores, self.top_k, dim=-1)
        out = torch.zeros_like(x)
        for j, expert in enumerate(self.experts):
            token, slot = torch.where(chosen == j)
            if token.numel():
                out.index_add_(0, token, expert(x[token]) * weights[token, slot, None].to(x.dtype))
        return out.view(b, length, e)


class DecoderLayer(nn.Module):
    def __init__(self, config, mlp: nn.Module, qkv_bias: bool, qk_norm: bool, shared_hidden: int = 0):
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = Attention(config, qkv_bias, qk_norm)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = mlp
        if shared_hidden:
            self.shared_expert = MLP(config.hidden_size, shared_hidden)

    def forward(self, x, allowed, cos, sin):
        x = x + self.self_attn(self.input_layernorm(x), allowed, cos, sin)
        m = self.post_attention_layernorm(x)
        y = self.mlp(m)
        if hasattr(self, "shared_expert"):
            y = y + self.shared_expert(m)
        return x + y


class Backbone(nn.Module):
    """`model.embed_tokens`, `model.layers.{i}`, `model.norm`."""

    def __init__(self, config, layers):
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(layers)
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        head_dim = _get(config, "head_dim", config.hidden_size // config.num_attention_heads)
        self.rotary_dim = int(head_dim * _get(config, "partial_rotary_factor", 1.0)) // 2 * 2
        self.theta = _rope_theta(config)

    def forward(self, input_ids, attention_mask=None, position_ids=None):
        if position_ids is None:
            position_ids = torch.arange(input_ids.shape[1], device=input_ids.device).expand(input_ids.shape)
        cos, sin = rope_tables(position_ids, self.rotary_dim, self.theta)
        allowed = None if attention_mask is None else attention_mask.bool()[:, None, None, :]
        x = self.embed_tokens(input_ids)
        for layer in self.layers:
            x = layer(x, allowed, cos, sin)
        return self.norm(x)


class _LM(transformers.PreTrainedModel):
    """A backbone `model` and the output head (`lm_head`, or the embedding when tied)."""

    base_model_prefix = "model"

    def __init__(self, config, layers):
        super().__init__(config)
        self.model = Backbone(config, layers)
        if not _get(config, "tie_word_embeddings", False):
            self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def _init_weights(self, module):
        std = _get(self.config, "initializer_range", 0.02)
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=std)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, RMSNorm):
            nn.init.ones_(module.weight)

    def get_input_embeddings(self):
        return self.model.embed_tokens

    def forward(self, input_ids, attention_mask=None, position_ids=None, **kwargs):
        """MaskedLMOutput with float32 logits (B, L, vocab_size)."""
        x = self.model(input_ids, attention_mask, position_ids)
        head = self.lm_head.weight if hasattr(self, "lm_head") else self.model.embed_tokens.weight
        return MaskedLMOutput(logits=F.linear(x, head).float())


def _config_kwargs(kwargs: dict) -> None:
    """Untied head unless config.json says otherwise; `rope_scaling` passed as `rope_parameters`
    (transformers 5's name: the old one warns), so a scaled RoPE is still seen and refused."""
    kwargs.setdefault("tie_word_embeddings", False)
    scaling = kwargs.pop("rope_scaling", None)
    if scaling is not None:
        kwargs["rope_parameters"] = scaling


class DreamConfig(transformers.PretrainedConfig):
    """Dream-v0-7B's config.json fields (defaults: Dream-v0-Base-7B, the Qwen2.5-7B shape)."""

    model_type = "Dream"

    def __init__(self, vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                 num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=131072, rms_norm_eps=1e-6,
                 rope_theta=1e6, initializer_range=0.02, mask_token_id=151666, **kwargs):
        self.vocab_size, self.hidden_size, self.intermediate_size = vocab_size, hidden_size, intermediate_size
        self.num_hidden_layers, self.num_attention_heads = num_hidden_layers, num_attention_heads
        self.num_key_value_heads, self.max_position_embeddings = num_key_value_heads, max_position_embeddings
        self.rms_norm_eps, self.rope_theta, self.initializer_range = rms_norm_eps, rope_theta, initializer_range
        self.mask_token_id = mask_token_id
        _config_kwargs(kwargs)
        super().__init__(**kwargs)


DREAM_ALGS = ("maskgit_plus", "topk_margin", "entropy", "origin")


def dream_sample_tokens(logits, temperature, top_p, top_k, alg, generator=None):
    """(confidence, x0) per position, Dream's rule: logits / temperature, the top-p then the top-k
    filter (removed entries at the float32 minimum), x0 the argmax (temperature 0) or a draw;
    confidence its probability, top-1 minus top-2 (topk_margin) or the negative entropy."""
    low = torch.finfo(torch.float32).min
    logits = logits.float() / (temperature if temperature > 0 else 1.0)
    if top_p is not None and top_p < 1:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True, stable=True)
        over = sorted_logits.softmax(-1).cumsum(-1) > top_p
        over = torch.cat([torch.zeros_like(over[..., :1]), over[..., :-1]], -1)  # keep the first past top_p
        logits = logits.masked_fill(torch.zeros_like(over).scatter(-1, order, over), low)
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, low)
    probs = logits.softmax(-1)
    if temperature > 0:
        x0 = torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1, generator=generator).view(probs.shape[:-1])
    else:
        x0 = probs.argmax(-1)
    if alg == "topk_margin":
        top2 = probs.topk(2, dim=-1).values
        return top2[..., 0] - top2[..., 1], x0
    if alg == "entropy":
        return (probs * torch.log(probs + 1e-10)).sum(-1), x0
    return probs.gather(-1, x0[..., None])[..., 0], x0


@torch.no_grad()
def dream_generate(model, input_ids, attention_mask=None, max_new_tokens=None, steps=512, eps=1e-3, alg="origin",
                   alg_temp=None, temperature=0.0, top_p=None, top_k=None, mask_token_id=None, generator=None):
    """Dream's reverse process (`diffusion_generate`'s rules, as `llada_jax.sampling.dream`):
    [prompt, mask * max_new_tokens], `steps` calls; with t, s = linspace(1, eps, steps + 1)[i, i + 1]
    step i reveals int(n * (1 - s / t)) of the n masked positions (mean over the batch; all at the
    last step) chosen by `alg`'s confidence (sampled with alg_temp), or each with probability
    1 - s / t ("origin"). attention_mask (B, P): 0 on left padding. Returns (B, P + max_new_tokens)."""
    if alg not in DREAM_ALGS:
        raise ValueError(f"diffusion_generate: alg={alg!r}, expected one of {DREAM_ALGS}")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"diffusion_generate: max_new_tokens={max_new_tokens!r}, expected an integer >= 1")
    mask_id = model.config.mask_token_id if mask_token_id is None else mask_token_id
    b = input_ids.shape[0]
    x = F.pad(input_ids.long(), (0, max_new_tokens), value=mask_id)
    mask = positions = None
    if attention_mask is not None and bool((attention_mask == 0).any()):  # Dream's left-padding positions
        mask = F.pad(attention_mask.long(), (0, max_new_tokens), value=1)
        positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
    ts = torch.linspace(1, eps, steps + 1)
    for i in range(steps):
        masked, last = x == mask_id, i == steps - 1
        logits = model(x, attention_mask=mask, position_ids=positions).logits
        logits = torch.cat([logits[:, :1], logits[:, :-1]], 1)  # [:, i] predicts token i
        confidence, x0 = dream_sample_tokens(logits, temperature, top_p, top_k, alg, generator)
        if alg == "origin":
            chance = 1.0 if last else 1 - ts[i + 1] / ts[i]
            x = torch.where(masked & (torch.rand(x.shape, generator=generator) < chance), x0, x)
            continue
        n = masked.sum() / b
        k = int(n) if last else int(n * (1 - ts[i + 1] / ts[i]))
        if k == 0:
            continue
        full = torch.where(masked, confidence, torch.full_like(confidence, -torch.inf))
        if alg_temp:
            chosen = torch.multinomial((full / alg_temp).softmax(-1), k, generator=generator)
        else:
            chosen = full.topk(k, dim=-1).indices
        x = x.scatter(1, chosen, torch.where(masked, x0, mask_id).gather(1, chosen))
    return x


class DreamModel(_LM):
    """Dream: Qwen2 blocks without the causal mask; the logit at i predicts token i + 1.
    `diffusion_generate(input_ids, attention_mask=None, max_new_tokens=..., steps=..., ...)`:
    `dream_generate`."""

    config_class = DreamConfig
    _no_split_modules = ["DecoderLayer"]

    def __init__(self, config):
        super().__init__(config, [DecoderLayer(config, MLP(config.hidden_size, config.intermediate_size), True, False)
                                  for _ in range(config.num_hidden_layers)])

    def diffusion_generate(self, inputs, **options):
        return dream_generate(self, inputs, **options)


class LLaDAMoEConfig(transformers.PretrainedConfig):
    """LLaDA-MoE's config.json fields (defaults: LLaDA-MoE-7B-A1B)."""

    model_type = "lladamoe"

    def __init__(self, vocab_size=157184, hidden_size=2048, dense_intermediate_size=8192,
                 expert_intermediate_size=1024, shared_expert_intermediate_size=None, num_hidden_layers=16,
                 num_attention_heads=16, num_key_value_heads=16, max_position_embeddings=8192, rms_norm_eps=1e-5,
                 rope_theta=50000.0, partial_rotary_factor=1.0, num_experts=64, num_experts_per_tok=8,
                 moe_layer_freq=None, moe_router_enable_expert_bias=False, qk_layernorm=True,
                 initializer_range=0.02, mask_token_id=156895, **kwargs):
        self.vocab_size, self.hidden_size = vocab_size, hidden_size
        self.dense_intermediate_size, self.expert_intermediate_size = dense_intermediate_size, expert_intermediate_size
        self.shared_expert_intermediate_size = shared_expert_intermediate_size
        self.num_hidden_layers, self.num_attention_heads = num_hidden_layers, num_attention_heads
        self.num_key_value_heads, self.max_position_embeddings = num_key_value_heads, max_position_embeddings
        self.rms_norm_eps, self.rope_theta, self.partial_rotary_factor = rms_norm_eps, rope_theta, partial_rotary_factor
        self.num_experts, self.num_experts_per_tok = num_experts, num_experts_per_tok
        self.moe_layer_freq = [1] * num_hidden_layers if moe_layer_freq is None else list(moe_layer_freq)
        self.moe_router_enable_expert_bias, self.qk_layernorm = moe_router_enable_expert_bias, qk_layernorm
        self.initializer_range, self.mask_token_id = initializer_range, mask_token_id
        _config_kwargs(kwargs)
        super().__init__(**kwargs)


class LLaDAMoEModelLM(_LM):
    """LLaDA-MoE: bidirectional blocks with q/k norms, dense or sparse-MoE MLPs; the logit at i
    predicts token i."""

    config_class = LLaDAMoEConfig
    _no_split_modules = ["DecoderLayer"]

    def __init__(self, config):
        freq = config.moe_layer_freq
        if len(freq) != config.num_hidden_layers or set(freq) - {0, 1}:
            raise ValueError(f"config moe_layer_freq={freq!r}: expected {config.num_hidden_layers} entries of "
                             f"0 (dense) or 1 (MoE)")
        layers = []
        for f in freq:
            mlp = SparseMoeBlock(config) if f else MLP(config.hidden_size, config.dense_intermediate_size)
            shared = _get(config, "shared_expert_intermediate_size", 0) if f else 0
            layers.append(DecoderLayer(config, mlp, False, bool(config.qk_layernorm), shared))
        super().__init__(config, layers)
