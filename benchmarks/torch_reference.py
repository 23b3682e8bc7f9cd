"""The official LLaDA sampling loop, re-written in plain PyTorch from the published generate.py, to
time the reference algorithm on the same machine as ours (`benchmarks/sample.py --torch`).

It keeps the reference's costs on purpose: a full forward pass with logits for every
position at every step, a float64 softmax over the whole vocabulary, and a Python loop
over rows for top-k. Benchmarks only; nothing in llada_jax imports it.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def _num_transfer_tokens(block_mask, steps):
    n = block_mask.sum(dim=1, keepdim=True)
    out = torch.zeros(n.size(0), steps, dtype=torch.int64) + n // steps
    for i in range(n.size(0)):
        out[i, : int(n[i] % steps)] += 1
    return out


@torch.no_grad()
def official_generate(model, prompt, *, steps, gen_length, block_length, mask_id, temperature=0.0):
    """Low-confidence remasking, no cfg; `model(ids) -> logits` (B, L, V)."""
    b, p = prompt.shape
    x = torch.full((b, p + gen_length), mask_id, dtype=torch.long)
    x[:, :p] = prompt
    num_blocks = gen_length // block_length
    steps_per_block = steps // num_blocks
    for blk in range(num_blocks):
        start, end = p + blk * block_length, p + (blk + 1) * block_length
        schedule = _num_transfer_tokens(x[:, start:end] == mask_id, steps_per_block)
        for i in range(steps_per_block):
            mask_index = x == mask_id
            logits = model(x)
            if temperature > 0:
                noise = torch.rand_like(logits, dtype=torch.float64)
                x0 = torch.argmax(logits.double().exp() / (-torch.log(noise)) ** temperature, dim=-1)
            else:
                x0 = torch.argmax(logits, dim=-1)
            prob = F.softmax(logits.double(), dim=-1)
            x0_p = torch.gather(prob, -1, x0[..., None])[..., 0]
            x0_p[:, end:] = -np.inf
            x0 = torch.where(mask_index, x0, x)
            confidence = torch.where(mask_index, x0_p, torch.full_like(x0_p, -np.inf))
            transfer = torch.zeros_like(x0, dtype=torch.bool)
            for j in range(b):
                _, idx = torch.topk(confidence[j], k=int(schedule[j, i]))
                transfer[j, idx] = True
            x[transfer] = x0[transfer]
    return x
