"""The reversal curse in miniature: a diffusion model and an autoregressive model of the
same size, trained on the same synthetic facts for the same steps, asked forward and
reverse questions about facts they only ever saw written forward.

Data: random made-up names (syllable tokens, e.g. "ka lo"); set A is written only as
"<A> is the parent of <B> ." and set B both as that and as "<B> is the child of <A> .",
so the inverse relation can be learned from set B. Each sentence is one row, followed by
EOS. Questions on set A (and on set B, as a control that was trained both ways):
- forward: "<A> is the parent of" -> <B>
- reverse: "<B> is the child of" -> <A>
- reverse (infill), diffusion only: "<B> is the child of [MASK]*k ." with the name infilled
- parent (infill), diffusion only: "[MASK]*k is the parent of <B> ." (the trained sentence
  with the first name masked: bidirectional recall without the inverse phrasing)
All answers are decoded greedily (temperature 0); a question counts as right when every
token of the name is. The LLaDA paper: forward/reverse 82.7/34.3 for GPT-4o,
48.8/42.4 for LLaDA-8B-Instruct on poem lines.

    python -m llada_jax.experiments.reversal --config=configs/experiments/reversal.py \
        --out=/tmp/reversal          # add :reduced to the config path for the CI-sized run
"""

from __future__ import annotations

import json
import os
import time

import numpy as np

from llada_jax.sampling import sampler
from llada_jax.experiments import greedy_ar, random_batches, train_model
from llada_jax.model import LLaDAConfig

EOS, MASK = "<eos>", "<mask>"
WORDS = ("is", "the", "parent", "child", "of", ".")
SYLLABLES = tuple(c + v for c in "bdfgklmnprstvz" for v in "aeiou")
VOCAB = (EOS, MASK) + WORDS + SYLLABLES
ID = {w: i for i, w in enumerate(VOCAB)}
QUESTIONS = ("forward", "reverse", "reverse_infill", "parent_infill")


def encode(words) -> list[int]:
    return [ID[w] for w in words]


def decode(ids) -> str:
    return " ".join(VOCAB[int(i)] for i in ids)


def make_facts(num_a: int, num_b: int, syllables_per_name: int, seed: int):
    """(set A, set B): lists of (parent, child) names, each a tuple of syllables; every
    name is used once."""
    rng = np.random.default_rng(seed)
    need = 2 * (num_a + num_b)
    if len(SYLLABLES) ** syllables_per_name < 4 * need:
        raise ValueError(f"{need} distinct names need more than {syllables_per_name} syllables each")
    names: list[tuple[str, ...]] = []
    seen = set()
    while len(names) < need:
        name = tuple(rng.choice(SYLLABLES, syllables_per_name))
        if name not in seen:
            seen.add(name)
            names.append(name)
    pairs = [(names[2 * i], names[2 * i + 1]) for i in range(num_a + num_b)]
    return pairs[:num_a], pairs[num_a:]


def forward_sentence(parent, child) -> list[str]:
    return [*parent, "is", "the", "parent", "of", *child, "."]


def reverse_sentence(parent, child) -> list[str]:
    return [*child, "is", "the", "child", "of", *parent, "."]


def training_rows(set_a, set_b) -> np.ndarray:
    """int32 (n, L): set A forward only, set B both ways; each sentence then EOS."""
    sentences = [forward_sentence(*f) for f in set_a]
    sentences += [forward_sentence(*f) for f in set_b] + [reverse_sentence(*f) for f in set_b]
    return np.asarray([encode(s + [EOS]) for s in sentences], np.int32)


def questions(facts, question: str):
    """(prompts (n, P) int32, answers (n, k) int32) of one question kind."""
    k = len(facts[0][0])
    mask = [MASK] * k
    if question == "forward":
        rows = [[*p, "is", "the", "parent", "of"] for p, _ in facts]
    elif question == "reverse":
        rows = [[*c, "is", "the", "child", "of"] for _, c in facts]
    elif question == "reverse_infill":
        rows = [[*c, "is", "the", "child", "of", *mask, ".", EOS] for _, c in facts]
    elif question == "parent_infill":
        rows = [[*mask, "is", "the", "parent", "of", *c, ".", EOS] for _, c in facts]
    else:
        raise ValueError(f"question={question!r}: expected one of {QUESTIONS}")
    target = [c if question == "forward" else p for p, c in facts]
    return np.asarray([encode(r) for r in rows], np.int32), np.asarray([encode(t) for t in target], np.int32)


def answer(kind, model, params, prompts, k: int, row_len: int) -> np.ndarray | None:
    """The model's k-token answers (n, k), or None when the kind cannot ask the question
    (an autoregressive model cannot infill)."""
    holes = prompts == ID[MASK]
    if kind == "autoregressive":
        return None if holes.any() else greedy_ar(model, params, prompts, k)
    kw = dict(temperature=0.0, mask_id=ID[MASK], eos_id=ID[EOS], eot_id=ID[EOS])
    if holes.any():  # infill the holes in place, one token per step
        out = np.asarray(sampler.generate(model, params, prompts, steps=k, gen_length=0, **kw))
        return out[holes].reshape(len(prompts), k)
    # the rest of the row (name, ".", EOS) is generated, as the rows were trained
    gen = row_len - prompts.shape[1]
    out = np.asarray(sampler.generate(model, params, prompts, steps=gen, gen_length=gen, block_length=gen, **kw))
    return out[:, prompts.shape[1]:prompts.shape[1] + k]


def evaluate(kind, model, params, facts, row_len: int) -> dict:
    """Exact-match accuracy of every question this kind can answer, and a few examples."""
    acc, examples = {}, {}
    for q in QUESTIONS:
        prompts, targets = questions(facts, q)
        got = answer(kind, model, params, prompts, targets.shape[1], row_len)
        if got is None:
            continue
        acc[q] = float(np.mean(np.all(got == targets, axis=1)))
        examples[q] = [f"{decode(p)} -> {decode(g)} (gold {decode(t)})"
                       for p, g, t in zip(prompts[:2], got[:2], targets[:2])]
    return {"accuracy": acc, "examples": examples}


def run(config, out_dir: str | None = None) -> dict:
    """Train both models, ask every question, write results.json, table.md and
    reversal.png into `out_dir` (if given). Returns the results dict."""
    d, m, t = config.data, config.model, config.train
    set_a, set_b = make_facts(d.num_a, d.num_b, d.syllables_per_name, d.seed)
    rows = training_rows(set_a, set_b)
    row_len = rows.shape[1]
    mcfg = LLaDAConfig(d_model=m.d_model, n_heads=m.n_heads, n_kv_heads=m.n_heads, n_layers=m.n_layers,
                       mlp_hidden_size=m.mlp_hidden_size, vocab_size=len(VOCAB), embedding_size=len(VOCAB),
                       max_sequence_length=64, rope_theta=10000.0, mask_token_id=ID[MASK],
                       eos_token_id=ID[EOS], pad_token_id=ID[EOS])
    results = {"config": config.to_dict(), "rows": int(len(rows)), "row_len": int(row_len), "models": {}}
    for kind in ("autoregressive", "diffusion"):
        start = time.perf_counter()
        batches = random_batches(rows, min(t.batch_size, len(rows)), t.seed)
        model, params, losses = train_model(kind, mcfg, batches, steps=t.steps, lr=t.lr, seed=t.seed,
                                            warmup_steps=t.warmup_steps)
        entry = {"final_loss": float(np.mean(losses[-20:])), "train_seconds": time.perf_counter() - start}
        for name, facts in (("set_a", set_a), ("set_b", set_b)):
            entry[name] = evaluate(kind, model, params, facts, row_len)
        results["models"][kind] = entry
        print(f"[reversal] {kind}: loss {entry['final_loss']:.3f}, set A {entry['set_a']['accuracy']}, "
              f"set B {entry['set_b']['accuracy']} ({entry['train_seconds']:.0f}s)", flush=True)
    results["table"] = table(results)
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "results.json"), "w") as f:
            json.dump(results, f, indent=1)
        with open(os.path.join(out_dir, "table.md"), "w") as f:
            f.write(results["table"] + "\n")
        plot(results, os.path.join(out_dir, "reversal.png"))
    return results


def table(results) -> str:
    """Markdown accuracy table (percent), set A (forward only) and set B (both ways)."""
    lines = ["| model | set | forward | reverse | reverse (infill) | parent (infill) |",
             "|---|---|---|---|---|---|"]
    for kind, entry in results["models"].items():
        for s, label in (("set_a", "A (forward only)"), ("set_b", "B (both ways)")):
            acc = entry[s]["accuracy"]
            cells = [f"{100 * acc[q]:.1f}" if q in acc else "n/a" for q in QUESTIONS]
            lines.append(f"| {kind} | {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(results, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    x = np.arange(len(QUESTIONS))
    for i, (kind, entry) in enumerate(results["models"].items()):
        acc = entry["set_a"]["accuracy"]
        vals = [100 * acc.get(q, np.nan) for q in QUESTIONS]
        ax.bar(x + (i - 0.5) * 0.38, vals, 0.38, label=kind)
    ax.set_xticks(x, ["forward", "reverse", "reverse\n(infill)", "parent\n(infill)"])
    ax.set_ylabel("exact-match accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title("Reversal curse in miniature: questions on facts seen only forward (set A)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    from absl import app, flags
    from ml_collections import config_flags

    config_flags.DEFINE_config_file("config", "configs/experiments/reversal.py", "experiment config")
    flags.DEFINE_string("out", "reversal_out", "output directory (results.json, table.md, reversal.png)")

    def _main(_):
        res = run(flags.FLAGS.config, flags.FLAGS.out)
        print(res["table"])

    app.run(_main, argv=argv)


if __name__ == "__main__":
    main()
