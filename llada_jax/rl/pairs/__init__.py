"""Preference pairs for VRPO as JSONL: one object per line,

    {"prompt": [ids...], "chosen": [ids...], "rejected": [ids...]}

token ids (int) of the prompt and of the two answers. Every prompt of a file has the same
length (the likelihood's prompt length is static); answers shorter than the longest are
padded with `eos_id` (LLaDA's SFT pads answers with EOS, so the padding is part of the
answer). A bad line is a ValueError naming the file and the line.

`python -m llada_jax.rl.pairs --config=configs/vrpo_sort.py --policy=SFT_DIR --out=FILE` writes
such a file from a policy's own scored samples (`llada_jax.rl.sample_pairs`).
"""

from __future__ import annotations

import json

import numpy as np

from llada_jax.data import documents

FIELDS = ("prompt", "chosen", "rejected")


def from_rewards(prompts_BxP, completions_BxGxA, rewards_BxG, exclude_id: int | None = None):
    """On-policy pairs from G scored samples per prompt: the best-rewarded sample over the
    worst (the first of each on ties), for the prompts whose samples differ in reward;
    with an exact-match reward, a correct answer of the model over an incorrect one.
    A sample holding `exclude_id` (the mask id, which a model may predict as a token and a
    pairs file must not hold) takes neither role. Returns (prompts (N, P), chosen (N, A),
    rejected (N, A)), N <= B."""
    completions = np.asarray(completions_BxGxA)
    r = np.asarray(rewards_BxG, np.float32)
    if completions.ndim != 3 or r.shape != completions.shape[:2] or len(prompts_BxP) != len(r):
        raise ValueError(f"from_rewards: completions {completions.shape} and rewards {r.shape} for "
                         f"{len(prompts_BxP)} prompts; expected (B, G, A) and (B, G)")
    ok = np.ones(r.shape, bool) if exclude_id is None else ~np.any(completions == exclude_id, axis=2)
    hi, lo = np.where(ok, r, -np.inf), np.where(ok, r, np.inf)
    rows = np.arange(len(r))
    keep = (ok.sum(axis=1) >= 2) & (hi.max(axis=1) > lo.min(axis=1))
    best, worst = completions[rows, hi.argmax(axis=1)], completions[rows, lo.argmin(axis=1)]
    return np.asarray(prompts_BxP)[keep], best[keep], worst[keep]


def write(path: str, prompts, chosen, rejected):
    """Write pairs (row-aligned int arrays or lists of lists) as JSONL; refuses to overwrite."""
    with open(path, "x") as f:
        for p, w, l in zip(prompts, chosen, rejected):
            f.write(json.dumps({"prompt": [int(i) for i in p], "chosen": [int(i) for i in w],
                                "rejected": [int(i) for i in l]}) + "\n")


def read(path: str, eos_id: int | None = None, vocab_size: int | None = None, mask_id: int | None = None):
    """(prompts (N, P), chosen (N, A), rejected (N, A)) int32 arrays from a pairs file; a
    pair holding `mask_id` is refused (file and line named)."""
    rows = []
    for _, where, obj in documents.jsonl_objects(path, lambda n: f"{path}:{n}"):
        if not isinstance(obj, dict) or any(k not in obj for k in FIELDS):
            raise ValueError(f"{where}: expected an object with keys {list(FIELDS)}")
        for k in FIELDS:
            v = obj[k]
            if not isinstance(v, list) or not v or not all(isinstance(t, int) and t >= 0 for t in v):
                raise ValueError(f"{where}: {k!r} must be a non-empty list of token ids (ints >= 0)")
            if mask_id is not None and mask_id in v:
                raise ValueError(f"{where}: {k!r} holds the mask id {mask_id}; preference data must not "
                                 f"contain it")
            if vocab_size is not None and max(v) >= vocab_size:
                raise ValueError(f"{where}: {k!r} holds id {max(v)}, expected < vocab_size={vocab_size}")
        rows.append(obj)
    if not rows:
        raise ValueError(f"{path}: no preference pairs")
    plens = {len(r["prompt"]) for r in rows}
    if len(plens) != 1:
        raise ValueError(f"{path}: prompts of different lengths {sorted(plens)}; expected one length")
    alen = max(max(len(r["chosen"]), len(r["rejected"])) for r in rows)
    if eos_id is None and any(len(r[k]) != alen for r in rows for k in ("chosen", "rejected")):
        raise ValueError(f"{path}: answers of different lengths and no eos_id to pad them with")

    def pad(k):
        return np.asarray([r[k] + [eos_id] * (alen - len(r[k])) for r in rows], np.int32)

    return np.asarray([r["prompt"] for r in rows], np.int32), pad("chosen"), pad("rejected")
