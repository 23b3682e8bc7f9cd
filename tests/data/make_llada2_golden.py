"""Golden data of LLaDA 2.x's published PyTorch code (LLaDA2.0-mini's layout), for tests/llada2_test.py.

    python tests/data/make_llada2_golden.py --published=DIR [--out=tests/data]

DIR holds `modeling_llada2_moe.py` and `configuration_llada2_moe.py` of ZHZisZZ/dllm at commit
ca176752 (`dllm/pipelines/llada2/models/`; the modeling file inclusionAI ships with
LLaDA2.0-mini), fetched, never committed here; run on CPU in float32 with transformers 4.57.1
(the published code needs 4.x: 5.x dropped its "default" RoPE entry), installed apart:
`pip install --target /tmp/tf4 --no-deps transformers==4.57.1 tokenizers==0.22.1
huggingface_hub==0.36.0`, then PYTHONPATH=/tmp/tf4, and torch 2.13. It writes
  llada2-tiny/                a tiny random checkpoint in the published layout (config.json with
                              model_type "llada2_moe" and dllm's auto_map, model.safetensors)
  llada2-tiny-logits.npz      input_ids (2, 24), attention_mask (row 1 right-padded by 5), the
                              block-causal 4-D additive mask given to the published forward
                              (blocks of 8 from index 0, padded keys -inf) and its float32
                              logits (2, 24, 128)
  llada2-tiny-generate.json   the published `generate` (greedy) on a few prompts and options:
                              each case's arguments and the tokens it returns
The tiny config has what the published code can do: GQA (4 query, 2 key/value heads of 8),
fused query_key_value, q/k RMS norms, partial RoPE (factor 0.5), a dense first layer
(first_k_dense_replace 1), 8 experts of which 2 per token, sigmoid routing with a non-zero
expert bias (chooses, does not weigh), group-limited routing (4 groups, best 2), renormalised
weights times routed_scaling_factor 2.5, one shared expert. Weights are random, spread so that
routing and logits are far from ties. config.json also says block_size 8 (llada_jax's block-causal
block; the published code ignores it: its `generate` takes block_length).
"""

import argparse
import importlib.util
import json
import os
import sys

import numpy as np
import torch

BLOCK = 8
CONFIG = dict(
    model_type="llada2_moe", architectures=["LLaDA2MoeModelLM"],
    auto_map={"AutoConfig": "configuration_llada2_moe.LLaDA2MoeConfig",
              "AutoModel": "modeling_llada2_moe.LLaDA2MoeModel",
              "AutoModelForCausalLM": "modeling_llada2_moe.LLaDA2MoeModelLM"},
    vocab_size=128, hidden_size=32, intermediate_size=64, moe_intermediate_size=24, num_hidden_layers=3,
    num_attention_heads=4, num_key_value_heads=2, head_dim=8, hidden_act="silu", use_qkv_bias=False,
    use_qk_norm=True, use_bias=False, rms_norm_eps=1e-6, norm_head=False, tie_word_embeddings=False,
    embedding_dropout=0.0, attention_dropout=0.0, output_dropout=0.0, initializer_range=0.02,
    max_position_embeddings=256, rope_theta=600000.0, use_cache=False, use_sliding_window=False,
    sliding_window=4096, max_window_layers=28, rope_scaling=None, pad_token_id=126, eos_token_id=126,
    num_experts=8, num_shared_experts=1, num_experts_per_tok=2, n_group=4, topk_group=2,
    routed_scaling_factor=2.5, first_k_dense_replace=1, output_router_logits=False, partial_rotary_factor=0.5,
    score_function="sigmoid", norm_topk_prob=True, moe_router_enable_expert_bias=True, mask_token_id=127,
    block_size=BLOCK, torch_dtype="float32")
MASK, EOS = 127, 126


def load_published(folder):
    """The published modules imported as a package from `folder` (relative imports)."""
    spec = importlib.util.spec_from_file_location("llada2_published", os.path.join(folder, "__init__.py"),
                                                  submodule_search_locations=[folder])
    if not os.path.exists(os.path.join(folder, "__init__.py")):
        open(os.path.join(folder, "__init__.py"), "w").close()
    pkg = importlib.util.module_from_spec(spec)
    sys.modules["llada2_published"] = pkg
    spec.loader.exec_module(pkg)
    from llada2_published import configuration_llada2_moe, modeling_llada2_moe  # noqa: E402

    return configuration_llada2_moe, modeling_llada2_moe


def block_causal_mask(t, valid):
    """(B, 1, T, T) float32 additive mask: query block >= key block, padded keys -inf."""
    blk = np.arange(t) // BLOCK
    ok = (blk[:, None] >= blk[None, :])[None] & valid[:, None, :].astype(bool)
    return np.where(ok, 0.0, -np.inf).astype(np.float32)[:, None]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--published", required=True)
    ap.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)))
    a = ap.parse_args()
    conf_mod, model_mod = load_published(a.published)
    kw = {k: v for k, v in CONFIG.items() if k not in ("model_type", "architectures", "auto_map", "torch_dtype")}
    config = conf_mod.LLaDA2MoeConfig(**kw)
    torch.manual_seed(0)
    model = model_mod.LLaDA2MoeModelLM(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.ones_like(p) + 0.1 * torch.randn_like(p) if p.ndim == 1 else 0.25 * torch.randn_like(p))
        for layer in model.model.layers:
            gate = getattr(layer.mlp, "gate", None)
            if gate is not None and hasattr(gate, "expert_bias"):
                gate.expert_bias.copy_(0.05 * torch.randn_like(gate.expert_bias))
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 126, (2, 24)).astype(np.int64)
    ids[0, 5:9] = MASK  # some mask tokens
    valid = np.ones((2, 24), np.int64)
    valid[1, -5:] = 0
    ids[1, -5:] = EOS
    mask4 = block_causal_mask(24, valid)
    with torch.no_grad():
        logits = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask4)).logits
    out = os.path.join(a.out, "llada2-tiny")
    os.makedirs(out, exist_ok=True)
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, os.path.join(out, "model.safetensors"),
              metadata={"format": "pt"})
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(CONFIG, f, indent=2)
    np.savez(os.path.join(a.out, "llada2-tiny-logits.npz"), input_ids=ids.astype(np.int32),
             attention_mask=valid.astype(np.int32), mask4=mask4, logits=logits.numpy().astype(np.float32))
    print("wrote", out, "logits", tuple(logits.shape), "max |logit|", float(logits.abs().max()))

    # The published generate (batch 1, greedy): prompts off and on the block grid. Its block mask
    # is bfloat16 (0 / -inf), which torch's SDPA refuses beside float32 queries: the forward it
    # calls gets the same 0 / -inf values as float32 (nothing else changes).
    forward = model.forward

    def forward_fp32_mask(*args, attention_mask=None, **kw):
        return forward(*args, attention_mask=None if attention_mask is None else attention_mask.float(), **kw)

    model.forward = forward_fp32_mask
    prompts = [rng.integers(0, 126, n).tolist() for n in (5, 11, 16)]
    base = dict(temperature=0.0, block_length=BLOCK, mask_id=MASK)
    probe = model.generate(torch.tensor([prompts[0]]), steps=4, gen_length=24, threshold=1.0, eos_id=-1, **base)
    eos = int(probe[0, 9])  # a token the model does emit mid-answer: the EOS of the EOS cases
    cases = [
        dict(prompt=prompts[0], steps=4, gen_length=24, threshold=1.0, eos_id=-1),  # the fixed schedule only
        dict(prompt=prompts[1], steps=8, gen_length=21, threshold=0.3, eos_id=-1),  # threshold, unaligned
        dict(prompt=prompts[2], steps=8, gen_length=16, threshold=0.5, eos_id=-1),  # prompt = 2 whole blocks
        dict(prompt=prompts[1], steps=8, gen_length=20, threshold=0.3, minimal_topk=4, eos_id=-1),  # steps 5
        dict(prompt=prompts[0], steps=4, gen_length=24, threshold=1.0, eos_id=eos),  # stops after EOS's block
        dict(prompt=prompts[0], steps=4, gen_length=24, threshold=1.0, eos_id=eos, eos_early_stop=True),
        dict(prompt=prompts[1], steps=3, gen_length=30, threshold=0.4, eos_id=eos, eos_early_stop=True),
    ]
    for c in cases:
        kw = {k: v for k, v in c.items() if k != "prompt"}
        with torch.no_grad():
            c["output"] = model.generate(torch.tensor([c["prompt"]]), **kw, **base)[0].tolist()
        print({k: v for k, v in c.items() if k != "prompt"})
    with open(os.path.join(a.out, "llada2-tiny-generate.json"), "w") as f:
        json.dump({"source": "ZHZisZZ/dllm@ca176752 dllm/pipelines/llada2/models/modeling_llada2_moe.py generate",
                   "block_length": BLOCK, "mask_id": MASK, "temperature": 0.0, "cases": cases}, f, indent=1)


if __name__ == "__main__":
    main()
