"""LLaDA in plain PyTorch, with the published parameter names (the published modeling_llada.py and checkpoint).

The same math as `llada_jax.model`: pre-norm LLaMA blocks without a causal mask,
RMSNorm and RoPE ("rotate half") in float32, grouped-query attention, SwiGLU, no
biases. Unlike the published modeling file, the 2-D padding mask is applied: keys
with attention_mask 0 get a large negative score (the published modeling_llada.py).

`LLaDATorch` is a plain `nn.Module` (state-dict keys `model.transformer.*`, exactly
the published ones) and needs neither transformers nor jax. Every export carries a
copy of this file as modeling_llada.py; its `LLaDAConfig` / `LLaDAModelLM` wrappers
for `AutoModel.from_pretrained(dir, trust_remote_code=True)` are built on first
access (module `__getattr__`), so transformers is imported only when they are asked for.
This is the only module of the project that imports torch.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os

import torch
import torch.nn.functional as F
from torch import nn

# Finite, like the JAX model: a row whose keys are all padding gets a uniform softmax, not NaN.
MASK_VALUE = -1e30
# Published features this module does not implement, with the only value it accepts.
_REQUIRED = {"block_type": "llama", "alibi": False, "include_bias": False, "include_qkv_bias": False,
             "scale_logits": False, "activation_type": "silu", "layer_norm_type": "rms", "rope": True,
             "block_group_size": 1, "input_emb_norm": False, "attention_layer_norm": False}


@dataclasses.dataclass(frozen=True)
class Args:
    d_model: int
    n_heads: int
    n_kv_heads: int
    n_layers: int
    mlp_hidden_size: int
    embedding_size: int
    rope_theta: float = 500000.0
    rms_norm_eps: float = 1e-5
    weight_tying: bool = False
    init_std: float = 0.02

    @classmethod
    def from_config(cls, cfg) -> "Args":
        """From a parsed config.json (dict) or a transformers config object."""
        get = cfg.get if isinstance(cfg, dict) else (lambda k, d=None: getattr(cfg, k, d))
        for key, want in _REQUIRED.items():
            if get(key) is not None and get(key) != want:
                raise ValueError(f"config {key}={get(key)!r} is not supported (expected {want!r})")
        n_heads = get("n_heads")
        n_kv = get("n_kv_heads") or (1 if get("multi_query_attention") else n_heads)
        return cls(d_model=get("d_model"), n_heads=n_heads, n_kv_heads=n_kv, n_layers=get("n_layers"),
                   mlp_hidden_size=get("mlp_hidden_size") or get("mlp_ratio", 4) * get("d_model"),
                   embedding_size=get("embedding_size") or get("vocab_size"),
                   rope_theta=get("rope_theta", 500000.0), rms_norm_eps=get("rms_norm_eps", 1e-5),
                   weight_tying=bool(get("weight_tying", False)), init_std=get("init_std", 0.02))


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return x32.to(x.dtype) * self.weight.to(x.dtype)


def rope_tables(length: int, head_dim: int, theta: float, device):
    """cos/sin (L, head_dim) in float32, angles repeated over the two halves (NeoX layout)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim))
    angles = torch.arange(length, dtype=torch.float32, device=device)[:, None] * inv_freq
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def apply_rope(x, cos, sin):
    """x (B, H, L, D), rotated in float32 and cast back."""
    x32 = x.float()
    half = x32.shape[-1] // 2
    rotated = torch.cat([-x32[..., half:], x32[..., :half]], dim=-1)
    return (x32 * cos + rotated * sin).to(x.dtype)


class LLaDABlock(nn.Module):
    """One pre-norm LLaMA block; attribute names are the published ones."""

    def __init__(self, a: Args):
        super().__init__()
        self.a = a
        d = a.d_model // a.n_heads
        self.attn_norm = RMSNorm(a.d_model, a.rms_norm_eps)
        self.ff_norm = RMSNorm(a.d_model, a.rms_norm_eps)
        self.q_proj = nn.Linear(a.d_model, a.n_heads * d, bias=False)
        self.k_proj = nn.Linear(a.d_model, a.n_kv_heads * d, bias=False)
        self.v_proj = nn.Linear(a.d_model, a.n_kv_heads * d, bias=False)
        self.attn_out = nn.Linear(a.n_heads * d, a.d_model, bias=False)
        self.ff_proj = nn.Linear(a.d_model, a.mlp_hidden_size, bias=False)  # gate (silu)
        self.up_proj = nn.Linear(a.d_model, a.mlp_hidden_size, bias=False)
        self.ff_out = nn.Linear(a.mlp_hidden_size, a.d_model, bias=False)  # down

    def forward(self, x, allowed, cos, sin):
        b, length, _ = x.shape
        h, kv = self.a.n_heads, self.a.n_kv_heads
        d = self.a.d_model // h
        n = self.attn_norm(x)
        q = apply_rope(self.q_proj(n).view(b, length, h, d).transpose(1, 2), cos, sin)
        k = apply_rope(self.k_proj(n).view(b, length, kv, d).transpose(1, 2), cos, sin)
        v = self.v_proj(n).view(b, length, kv, d).transpose(1, 2)
        if kv < h:  # key/value head j serves query heads j*g .. j*g+g-1
            k, v = k.repeat_interleave(h // kv, dim=1), v.repeat_interleave(h // kv, dim=1)
        scores = torch.matmul(q.float(), k.float().transpose(-1, -2)) / math.sqrt(d)
        if allowed is not None:
            scores = scores.masked_fill(~allowed, MASK_VALUE)
        probs = scores.softmax(dim=-1).to(v.dtype)
        attn = torch.matmul(probs, v).transpose(1, 2).reshape(b, length, h * d)
        x = x + self.attn_out(attn)
        m = self.ff_norm(x)
        return x + self.ff_out(F.silu(self.ff_proj(m)) * self.up_proj(m))


class LLaDATransformer(nn.Module):
    """Embedding, blocks, final norm, output head: `transformer.*` as published."""

    def __init__(self, a: Args):
        super().__init__()
        self.a = a
        parts = dict(wte=nn.Embedding(a.embedding_size, a.d_model),
                     blocks=nn.ModuleList([LLaDABlock(a) for _ in range(a.n_layers)]),
                     ln_f=RMSNorm(a.d_model, a.rms_norm_eps))
        if not a.weight_tying:
            parts["ff_out"] = nn.Linear(a.d_model, a.embedding_size, bias=False)
        self.transformer = nn.ModuleDict(parts)

    def forward(self, input_ids, attention_mask=None):
        """float32 logits (B, L, embedding_size); attention_mask (B, L): 1 = real token, 0 = padding."""
        t = self.transformer
        x = t.wte(input_ids)
        cos, sin = rope_tables(input_ids.shape[1], self.a.d_model // self.a.n_heads, self.a.rope_theta, x.device)
        allowed = None if attention_mask is None else attention_mask.bool()[:, None, None, :]
        for block in t.blocks:
            x = block(x, allowed, cos, sin)
        x = t.ln_f(x)
        head = t.wte.weight if self.a.weight_tying else t.ff_out.weight
        return F.linear(x, head).float()


class LLaDATorch(nn.Module):
    """Plain PyTorch LLaDA: `model(input_ids, attention_mask=None) -> float32 logits`."""

    def __init__(self, a: Args):
        super().__init__()
        self.args = a
        self.model = LLaDATransformer(a)

    def forward(self, input_ids, attention_mask=None):
        return self.model(input_ids, attention_mask)

    @classmethod
    def from_pretrained(cls, path: str, dtype: torch.dtype | None = None) -> "LLaDATorch":
        """Load an HF directory (config.json + model.safetensors or an indexed set of shards).

        Built on the meta device and filled with the file tensors, so memory holds one
        copy of the weights. Key or shape mismatches raise ValueError naming the key.
        """
        from safetensors import safe_open

        with open(os.path.join(path, "config.json")) as f:
            args = Args.from_config(json.load(f))
        index = os.path.join(path, "model.safetensors.index.json")
        if os.path.exists(index):
            with open(index) as f:
                files = sorted(set(json.load(f)["weight_map"].values()))
        else:
            files = ["model.safetensors"]
        with torch.device("meta"):
            model = cls(args)
        want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        state = {}
        for fname in files:
            with safe_open(os.path.join(path, fname), framework="pt") as f:
                for key in f.keys():
                    if key not in want:
                        raise ValueError(f"{fname}: unexpected tensor {key!r} for this config")
                    t = f.get_tensor(key)
                    if tuple(t.shape) != want[key]:
                        raise ValueError(f"tensor {key!r} has shape {tuple(t.shape)}, expected {want[key]}")
                    state[key] = t if dtype is None else t.to(dtype)
        missing = [k for k in want if k not in state]
        if missing:
            raise ValueError(f"{path}: missing tensor {missing[0]!r} ({len(missing)} missing in all)")
        model.load_state_dict(state, strict=True, assign=True)
        return model.eval()


def _init_weights(module, std: float):
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=std)
    elif isinstance(module, RMSNorm):
        nn.init.ones_(module.weight)


_HF_CLASSES: dict = {}


def _hf_classes() -> dict:
    """transformers wrappers, built once on demand (see the module docstring)."""
    if _HF_CLASSES:
        return _HF_CLASSES
    import transformers
    from transformers.modeling_outputs import CausalLMOutput

    class LLaDAConfig(transformers.PretrainedConfig):
        model_type = "llada"

        def __init__(self, d_model=4096, n_heads=32, n_kv_heads=None, n_layers=32, mlp_hidden_size=12288,
                     vocab_size=126464, embedding_size=126464, rope_theta=500000.0, rms_norm_eps=1e-5,
                     weight_tying=False, init_std=0.02, mask_token_id=126336, **kwargs):
            self.d_model, self.n_heads, self.n_kv_heads, self.n_layers = d_model, n_heads, n_kv_heads, n_layers
            self.mlp_hidden_size, self.vocab_size, self.embedding_size = mlp_hidden_size, vocab_size, embedding_size
            self.rope_theta, self.rms_norm_eps, self.weight_tying = rope_theta, rms_norm_eps, weight_tying
            self.init_std, self.mask_token_id = init_std, mask_token_id
            super().__init__(**kwargs)

    class LLaDAModelLM(transformers.PreTrainedModel):
        config_class = LLaDAConfig
        base_model_prefix = "model"
        _no_split_modules = ["LLaDABlock"]

        def __init__(self, config):
            super().__init__(config)
            self.model = LLaDATransformer(Args.from_config(config))
            self.post_init()

        def _init_weights(self, module):
            _init_weights(module, self.config.init_std)

        def forward(self, input_ids, attention_mask=None, **kwargs):
            return CausalLMOutput(logits=self.model(input_ids, attention_mask))

    _HF_CLASSES.update(LLaDAConfig=LLaDAConfig, LLaDAModelLM=LLaDAModelLM)
    return _HF_CLASSES


def __getattr__(name):
    if name in ("LLaDAConfig", "LLaDAModelLM"):
        return _hf_classes()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
