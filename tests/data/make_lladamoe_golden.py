"""Golden data of LLaDA-MoE-7B-A1B's published PyTorch code, for tests/moe_family_test.py.

    python tests/data/make_lladamoe_golden.py --published=DIR [--out=tests/data]

DIR holds `modeling_lladamoe.py` and `configuration_lladamoe.py` of ZHZisZZ/dllm at commit
ca176752 (`dllm/pipelines/llada/models/`; the modeling file inclusionAI ships with
LLaDA-MoE-7B-A1B-Base), fetched, never committed here; run on CPU in float32 with
transformers 4.57.1 (the published code needs 4.x: 5.x dropped its "default" RoPE entry),
installed apart: `pip install --target /tmp/tf4 --no-deps transformers==4.57.1
tokenizers==0.22.1 huggingface_hub==0.36.0`, then PYTHONPATH=/tmp/tf4, and torch 2.13. It writes
  lladamoe-tiny/            a tiny random checkpoint in the published layout (config.json with
                            model_type "lladamoe" and dllm's auto_map, model.safetensors)
  lladamoe-tiny-logits.npz  input_ids (2, 24), attention_mask (row 1 right-padded by 5) and the
                            published model's float32 logits (2, 24, 256)
The tiny config has what the published code can do: GQA (4 query, 2 key/value heads), q/k
RMS norms, a dense first layer (moe_layer_freq [0, 1, 1]), 8 experts of which 2 per token,
a shared expert, and a non-zero expert bias (added to the softmax scores that choose and
weigh, as the published block does). Weights are random, spread so that routing and logits
are far from ties.
"""

import argparse
import importlib.util
import json
import os
import sys

import numpy as np
import torch

CONFIG = dict(
    model_type="lladamoe", architectures=["LLaDAMoEModelLM"],
    auto_map={"AutoConfig": "configuration_lladamoe.LLaDAMoEConfig", "AutoModel": "modeling_lladamoe.LLaDAMoEModelLM",
              "AutoModelForCausalLM": "modeling_lladamoe.LLaDAMoEModelLM"},
    vocab_size=256, hidden_size=64, dense_intermediate_size=96, expert_intermediate_size=32,
    shared_expert_intermediate_size=48, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
    hidden_act="silu", max_position_embeddings=512, initializer_range=0.02, rms_norm_eps=1e-5, use_cache=False,
    pad_token_id=250, eos_token_id=250, bos_token_id=None, tie_word_embeddings=False, rope_theta=50000.0,
    partial_rotary_factor=1.0, rope_scaling=None, attention_bias=False, attention_dropout=0.0, clip_qkv=None,
    num_experts_per_tok=2, num_experts=8, output_router_logits=False, router_aux_loss_coef=0.01,
    norm_topk_prob=False, qk_layernorm=True, moe_layer_freq=[0, 1, 1], moe_router_enable_expert_bias=True,
    moe_router_score_function="softmax", routed_scaling_factor=1, router_num_group=-2, router_topk_group=-2,
    mask_token_id=255, torch_dtype="float32")


def load_published(folder):
    """The published modules imported as a package from `folder` (relative imports)."""
    spec = importlib.util.spec_from_file_location("lladamoe_published", os.path.join(folder, "__init__.py"),
                                                  submodule_search_locations=[folder])
    if not os.path.exists(os.path.join(folder, "__init__.py")):
        open(os.path.join(folder, "__init__.py"), "w").close()
    pkg = importlib.util.module_from_spec(spec)
    sys.modules["lladamoe_published"] = pkg
    spec.loader.exec_module(pkg)
    from lladamoe_published import configuration_lladamoe, modeling_lladamoe  # noqa: E402

    return configuration_lladamoe, modeling_lladamoe


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--published", required=True)
    ap.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)))
    a = ap.parse_args()
    conf_mod, model_mod = load_published(a.published)
    kw = {k: v for k, v in CONFIG.items() if k not in ("model_type", "architectures", "auto_map", "torch_dtype")}
    config = conf_mod.LLaDAMoEConfig(**kw)
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    model = model_mod.LLaDAMoEModelLM(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.ones_like(p) + 0.1 * torch.randn_like(p) if p.ndim == 1 else 0.15 * torch.randn_like(p))
        for layer in model.model.layers:
            if getattr(layer.mlp, "expert_bias", None) is not None:
                layer.mlp.expert_bias.copy_(0.05 * torch.randn_like(layer.mlp.expert_bias))
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 250, (2, 24)).astype(np.int64)
    ids[0, 5:9] = 255  # some mask tokens
    mask = np.ones((2, 24), np.int64)
    mask[1, -5:] = 0
    ids[1, -5:] = 250
    with torch.no_grad():
        logits = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).logits
    out = os.path.join(a.out, "lladamoe-tiny")
    os.makedirs(out, exist_ok=True)
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, os.path.join(out, "model.safetensors"),
              metadata={"format": "pt"})
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(CONFIG, f, indent=2)
    np.savez(os.path.join(a.out, "lladamoe-tiny-logits.npz"), input_ids=ids.astype(np.int32),
             attention_mask=mask.astype(np.int32), logits=logits.numpy().astype(np.float32))
    print("wrote", out, "logits", tuple(logits.shape), "max |logit|", float(logits.abs().max()))


if __name__ == "__main__":
    main()
