"""Make the golden files of the Dream, Llama, Qwen2 and Qwen3 families (run once, on CPU, fp32).

    python tests/data/make_families_golden.py --dream_src=DIR [--only=NAME]

Llama, Qwen2, Qwen3: transformers 5.23.0's own `LlamaForCausalLM`, `Qwen2ForCausalLM` and
`Qwen3ForCausalLM`. Dream: the published modeling code of ZHZisZZ/dllm at commit
ca176752fbceec49c6b4777a2c18ae88e4eb10ed, `dllm/pipelines/dream/models/` (modeling_dream.py,
configuration_dream.py, generation_utils.py), copied into DIR/dream_pkg/ (with an empty
__init__.py). Under transformers 5 that code needs one shim: the "default" RoPE initialiser,
which transformers 5 dropped from ROPE_INIT_FUNCTIONS, is put back with transformers 4's formula.

`--only=NAME` writes one of them (llama, qwen2, qwen3, llama3: Llama with Llama 3.1's RoPE
rescaling, dream). Writes, for each family F, tests/data/F-tiny/ (config.json, model.safetensors: a tiny random
model with GQA, weights spread so logits are peaked, biases and norm scales random) and
F-tiny-logits.npz (input_ids, attention_mask with left padding in row 0, position_ids, the
published fp32 logits); for Dream also dream-tiny-generate.json (diffusion_generate's tokens).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import torch
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
V, E, H, K, M, LAYERS = 96, 64, 4, 2, 96, 2
MASK, PAD = 95, 94


def spread(model, seed):
    """Random weights (std 0.15; norms 1 +- 0.2; biases std 0.1): peaked, distinct logits."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.15 * torch.randn(p.shape, generator=g))
    return model.eval()


def inputs(pad_first=3, length=12, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, PAD, size=(2, length)).astype(np.int64)
    mask = np.ones((2, length), np.int64)
    ids[0, :pad_first] = PAD
    mask[0, :pad_first] = 0
    return ids, mask


def causal_families():
    import transformers

    common = dict(vocab_size=V, hidden_size=E, intermediate_size=M, num_hidden_layers=LAYERS,
                  num_attention_heads=H, num_key_value_heads=K, max_position_embeddings=128, rms_norm_eps=1e-6,
                  bos_token_id=PAD, eos_token_id=PAD, pad_token_id=PAD)
    return {
        "llama": transformers.LlamaForCausalLM(transformers.LlamaConfig(**common, rope_theta=10000.0)),
        "qwen2": transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**common, rope_theta=1e6,
                                                                         tie_word_embeddings=True)),
        "qwen3": transformers.Qwen3ForCausalLM(transformers.Qwen3Config(**common, rope_theta=1e6, head_dim=32)),
        # Llama 3.1's RoPE rescaling, its original context shorter than the 12 test positions'
        # wavelengths so that all three bands (kept, interpolated, divided) occur.
        "llama3": transformers.LlamaForCausalLM(transformers.LlamaConfig(**common, rope_parameters=dict(
            rope_type="llama3", rope_theta=10000.0, factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
            original_max_position_embeddings=16))),
    }


def write_causal(name, model):
    out = os.path.join(HERE, f"{name}-tiny")
    model.save_pretrained(out, safe_serialization=True)
    ids, mask = inputs()
    with torch.no_grad():
        logits = model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).logits.float().numpy()
    np.savez(os.path.join(HERE, f"{name}-tiny-logits.npz"), input_ids=ids.astype(np.int32),
             attention_mask=mask.astype(np.int32), logits=logits)


def load_dream(src):
    from transformers import modeling_rope_utils

    def default_rope(config, device=None, seq_len=None, **_):  # transformers 4's "default"
        dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        inv = 1.0 / (config.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float().to(device) / dim))
        return inv, 1.0

    modeling_rope_utils.ROPE_INIT_FUNCTIONS.setdefault("default", default_rope)
    sys.path.insert(0, src)
    from dream_pkg import configuration_dream, generation_utils, modeling_dream

    return configuration_dream, generation_utils, modeling_dream


def write_dream(src):
    configuration_dream, generation_utils, modeling_dream = load_dream(src)
    fields = dict(vocab_size=V, hidden_size=E, intermediate_size=M, num_hidden_layers=LAYERS, num_attention_heads=H,
                  num_key_value_heads=K, max_position_embeddings=128, rms_norm_eps=1e-6, rope_theta=10000.0,
                  tie_word_embeddings=False, mask_token_id=MASK, pad_token_id=PAD, bos_token_id=PAD, eos_token_id=PAD)
    config = configuration_dream.DreamConfig(**fields)
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    model = spread(modeling_dream.DreamModel(config), seed=3)
    with torch.no_grad():  # a trained Dream never predicts [MASK]: without this, rows would differ in mask
        model.lm_head.weight[MASK] = -2 * model.lm_head.weight.mean(0)  # counts, where Dream's top-k ties decide
    out = os.path.join(HERE, "dream-tiny")
    os.makedirs(out, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, os.path.join(out, "model.safetensors"))
    published = dict(fields, model_type="Dream", architectures=["DreamModel"], hidden_act="silu",
                     use_sliding_window=False, sliding_window=None, max_window_layers=LAYERS, rope_scaling=None,
                     attention_dropout=0.0, initializer_range=0.02, use_cache=False, torch_dtype="float32",
                     auto_map={"AutoConfig": "configuration_dream.DreamConfig",
                               "AutoModel": "modeling_dream.DreamModel"})
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(published, f, indent=1)
    ids, mask = inputs()
    pos = np.cumsum(mask, -1) - 1
    pos[mask == 0] = 1  # as Dream's sampler sets tok_idx
    with torch.no_grad():
        logits = model(torch.tensor(ids), torch.tensor(mask), torch.tensor(pos)).logits.float().numpy()
    np.savez(os.path.join(HERE, "dream-tiny-logits.npz"), input_ids=ids.astype(np.int32),
             attention_mask=mask.astype(np.int32), position_ids=pos.astype(np.int32), logits=logits)

    cases = []
    grid = [dict(alg="maskgit_plus"), dict(alg="topk_margin"), dict(alg="entropy"),
            dict(alg="maskgit_plus", top_p=0.9, top_k=20), dict(alg="entropy", eps=0.05),
            dict(alg="maskgit_plus", top_k=5)]
    for pad_first in (2, 0):
        prompt, pmask = inputs(pad_first=pad_first, length=6, seed=1 + pad_first)
        for opts in grid:
            o = dict(dict(steps=8, gen_length=8, temperature=0.0, top_p=None, top_k=None, eps=1e-3), **opts)
            gc = generation_utils.DreamGenerationConfig(
                max_new_tokens=o["gen_length"], steps=o["steps"], alg=o["alg"], temperature=0.0, top_p=o["top_p"],
                top_k=o["top_k"], eps=o["eps"], alg_temp=None, mask_token_id=MASK, pad_token_id=PAD,
                bos_token_id=PAD, eos_token_id=PAD)
            tokens = model.diffusion_generate(torch.tensor(prompt), generation_config=gc,
                                              attention_mask=torch.tensor(pmask) if pad_first else None)
            cases.append(dict(prompt=prompt.tolist(), attention_mask=pmask.tolist(), options=o,
                              tokens=tokens.tolist()))
    with open(os.path.join(HERE, "dream-tiny-generate.json"), "w") as f:
        json.dump(cases, f)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dream_src", help="directory holding dream_pkg/ (the published files)")
    ap.add_argument("--only", choices=["llama", "qwen2", "qwen3", "llama3", "dream"])
    args = ap.parse_args()
    if args.only in (None, "dream") and not args.dream_src:
        ap.error("--dream_src is required for the dream files")
    torch.manual_seed(0)
    for i, (name, model) in enumerate(causal_families().items()):
        if args.only in (None, name):
            write_causal(name, spread(model, seed=i))
    if args.only not in (None, "dream"):
        return
    write_dream(args.dream_src)


if __name__ == "__main__":
    main()
