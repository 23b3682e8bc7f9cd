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
`generate` (also a method of both models) is LLaDA's reverse process, the published
sampler's rules, so a PyTorch user samples from an export without this project.
This and `torch_families` (Dream, LLaDA-MoE) are the only modules of the project that import torch.
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
    mask_token_id: int = 126336
    eos_token_id: int = 126081

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
                   weight_tying=bool(get("weight_tying", False)), init_std=get("init_std", 0.02),
                   mask_token_id=_given(get("mask_token_id"), 126336),
                   eos_token_id=_given(get("eos_token_id"), 126081))


def _given(value, default):
    return default if value is None else value


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

    def generate(self, prompt, attention_mask=None, **options):
        """LLaDA's reverse process (module `generate`), mask and EOS ids from the config."""
        return _model_generate(self, prompt, attention_mask, **options)

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

REMASKING = ("low_confidence", "random")


def num_transfer_tokens(n_masked, steps: int):
    """(B, steps) tokens revealed per step: n // s each, one more in the first n % s steps."""
    extra = torch.arange(steps, device=n_masked.device)[None, :] < (n_masked % steps)[:, None]
    return n_masked[:, None] // steps + extra.long()


def add_gumbel_noise(logits, temperature: float, generator=None):
    """Gumbel-max in float64, as the published sampler: exp(logits) / (-log u)^T, whose
    argmax is argmax(logits + T * Gumbel noise). T = 0: the logits unchanged."""
    if temperature == 0:
        return logits
    logits = logits.to(torch.float64)
    u = torch.rand(logits.shape, dtype=torch.float64, device=logits.device, generator=generator)
    return logits.exp() / (-torch.log(u)) ** temperature


def _check_options(prompt, attention_mask, steps, gen_length, block_length, temperature, cfg_scale, remasking):
    def bad(name, value, expected):
        raise ValueError(f"generate: {name}={value!r}: expected {expected}")

    if prompt.ndim != 2 or prompt.shape[1] == 0:
        bad("prompt.shape", tuple(prompt.shape), "(batch, prompt_len) with prompt_len >= 1")
    if attention_mask is not None and tuple(attention_mask.shape) != tuple(prompt.shape):
        bad("attention_mask.shape", tuple(attention_mask.shape), f"the prompt's shape {tuple(prompt.shape)}")
    if not isinstance(gen_length, int) or gen_length < 1:
        bad("gen_length", gen_length, "a positive int")
    if not isinstance(block_length, int) or block_length < 1 or gen_length % block_length:
        bad("block_length", block_length, f"a positive divisor of gen_length={gen_length}")
    if not isinstance(steps, int) or steps < 1 or steps % (gen_length // block_length):
        bad("steps", steps, f"a positive multiple of the number of blocks ({gen_length // block_length})")
    if remasking not in REMASKING:
        bad("remasking", remasking, f"one of {REMASKING}")
    if not temperature >= 0:
        bad("temperature", temperature, ">= 0")
    if not cfg_scale >= 0:
        bad("cfg_scale", cfg_scale, ">= 0")


@torch.no_grad()
def generate(model, prompt, attention_mask=None, steps=128, gen_length=128, block_length=128, temperature=0.0,
             cfg_scale=0.0, remasking="low_confidence", mask_id=126336, logits_eos_inf=False,
             confidence_eos_eot_inf=False, eos_id=126081, eot_id=126348, generator=None):
    """LLaDA's reverse process, the published sampler's rules (its generate.py): start from
    [prompt, mask_id * gen_length]; blocks of block_length left to right, steps / blocks
    steps each; each step predicts x0 = argmax(logits + T * Gumbel) (float64 noise) and
    reveals the k masked positions of the block with the highest confidence (`low_confidence`:
    the softmax probability of x0; `random`: uniform), ties to the lower position.

    model(input_ids, attention_mask) -> logits (or an output with .logits). prompt (B, P) ids;
    left-pad rows of different lengths with EOS and pass attention_mask (B, P), 0 on padding.
    cfg_scale > 0: classifier-free guidance with a copy whose prompt is all masks. With
    `confidence_eos_eot_inf` the confidence is computed with the EOS and EoT logits at -inf
    (at every temperature). Masks inside the prompt are infilled and count into the first
    block's budget, as `llada_jax.generate` does (the published sampler budgets only the
    block's masks; without masks in the prompt the two are the same). `generator`: the
    torch.Generator of the noise and the random remasking. Returns (B, P + gen_length) long:
    for the same options at temperature 0 the tokens of `llada_jax.generate`.
    """
    prompt = torch.as_tensor(prompt).long()
    _check_options(prompt, attention_mask, steps, gen_length, block_length, temperature, cfg_scale, remasking)
    b, p = prompt.shape
    device = next(model.parameters()).device if isinstance(model, nn.Module) else prompt.device
    x = torch.full((b, p + gen_length), mask_id, dtype=torch.long, device=device)
    x[:, :p] = prompt.to(device)
    if attention_mask is not None:
        attention_mask = torch.cat([torch.as_tensor(attention_mask, device=device),
                                    torch.ones(b, gen_length, dtype=torch.long, device=device)], dim=1)
    prompt_index = x != mask_id
    num_blocks = gen_length // block_length
    steps_per_block = steps // num_blocks
    for blk in range(num_blocks):
        end = p + (blk + 1) * block_length
        open_masks = (x[:, end - block_length:end] == mask_id).sum(1) + (x[:, :p] == mask_id).sum(1)
        schedule = num_transfer_tokens(open_masks, steps_per_block)
        for i in range(steps_per_block):
            mask_index = x == mask_id
            logits = _guided_logits(model, x, attention_mask, prompt_index, cfg_scale, mask_id).float()
            if logits_eos_inf:
                logits[:, :, eos_id] = -torch.inf
            x0 = torch.argmax(add_gumbel_noise(logits, temperature, generator), dim=-1)
            if remasking == "low_confidence":
                conf_logits = logits
                if confidence_eos_eot_inf:
                    conf_logits = logits.clone()
                    conf_logits[:, :, [eos_id, eot_id]] = -torch.inf
                picked = torch.gather(conf_logits, -1, x0[..., None])[..., 0]
                confidence = torch.exp(picked - torch.logsumexp(conf_logits, dim=-1))
            else:
                confidence = torch.rand(x0.shape, device=device, generator=generator)
            confidence[:, end:] = -torch.inf  # right of the current block
            confidence = torch.where(mask_index, confidence, -torch.inf)
            rank = torch.argsort(torch.argsort(-confidence, dim=-1, stable=True), dim=-1)
            select = (rank < schedule[:, i:i + 1]) & (confidence > -torch.inf)
            x = torch.where(select, x0, x)
    return x


def _guided_logits(model, x, attention_mask, prompt_index, cfg_scale, mask_id):
    """The model's logits; with cfg_scale > 0 mixed with a copy whose prompt is all masks:
    uncond + (cfg_scale + 1) * (cond - uncond)."""
    if cfg_scale > 0:
        x = torch.cat([x, torch.where(prompt_index, mask_id, x)], dim=0)
        attention_mask = None if attention_mask is None else torch.cat([attention_mask] * 2, dim=0)
    out = model(x, attention_mask)
    logits = getattr(out, "logits", out)
    if cfg_scale > 0:
        cond, uncond = torch.chunk(logits, 2, dim=0)
        logits = uncond + (cfg_scale + 1) * (cond - uncond)
    return logits


def _model_generate(self, prompt, attention_mask=None, **options):
    """`generate(self, prompt, ...)` with mask_id and eos_id (also the default eot_id) from the config."""
    a = Args.from_config(self.config) if hasattr(self, "config") else self.args
    options.setdefault("mask_id", a.mask_token_id)
    options.setdefault("eos_id", a.eos_token_id)
    options.setdefault("eot_id", options["eos_id"])
    return generate(self, prompt, attention_mask, **options)


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

        generate = _model_generate  # LLaDA's reverse process, not transformers' autoregressive one

    _HF_CLASSES.update(LLaDAConfig=LLaDAConfig, LLaDAModelLM=LLaDAModelLM)
    return _HF_CLASSES


def __getattr__(name):
    if name in ("LLaDAConfig", "LLaDAModelLM"):
        return _hf_classes()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
