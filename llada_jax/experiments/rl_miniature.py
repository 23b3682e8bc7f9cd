"""RL on a diffusion LM in miniature: diffu-GRPO and VRPO raise the exact-match accuracy
of an SFT model on a checkable task (sort `n_items` digits), compared with SFT continued
for the same training FLOPs.

The set-up models the usual RL situation: labelled answers are scarce (the SFT start and
the SFT baseline see a fixed set of `sft_examples` labelled rows), prompts are plentiful
and an answer can be checked (GRPO samples fresh prompts and learns from the exact-match
reward; VRPO learns from preference pairs on fresh prompts, a correct sample of the SFT
model over an incorrect one). Held-out prompts are scored by greedy
decoding (low-confidence remasking, one token per step).

    python -m llada_jax.experiments.rl_miniature --out=/tmp/rl --seed=0 [--mode=reduced]

prints one JSON line per seed: accuracy_before, accuracy_after (GRPO),
accuracy_sft_baseline (SFT continued for GRPO's FLOPs), accuracy_after_vrpo,
accuracy_sft_baseline_vrpo (for VRPO's FLOPs, pair generation included), and the FLOPs.
"""

from __future__ import annotations

import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from llada_jax import cli
from llada_jax.config import experiment_mode
from llada_jax.experiments import experiment_run, optim_config, start_state
from llada_jax.training import loop, optimizer
from llada_jax.model import LLaDAConfig, build, flops, init_params
from llada_jax.rl import loop as rl_loop
from llada_jax.rl import pairs as pairs_lib
from llada_jax.rl import rewards, rollout
from llada_jax.rl import step as rl_step
from llada_jax.data.tasks import SortTask
from llada_jax.sampling.params import SamplingParams

FULL = dict(n_items=6, n_values=20, answer_len=8, d_model=64, n_layers=2, mlp=256,
            sft_examples=200, sft_steps=400, sft_batch=64, sft_lr=3e-3, sft_continue_lr=3e-4,
            rl_steps=300, prompts=16, generations=8, mu=8, rl_lr=5e-5, temperature=1.0,
            p_mask_prompt=0.15, epsilon=0.2, beta=0.0,
            vrpo_steps=200, vrpo_batch=32, vrpo_n=8, vrpo_beta=0.1, vrpo_lr=1e-5, pair_prompts=4096,
            pair_generations=8, eval_prompts=512)
REDUCED = dict(FULL, n_items=3, n_values=4, answer_len=4, d_model=32, n_layers=1, mlp=64, sft_examples=64,
               sft_steps=100, sft_batch=16, rl_steps=2, mu=2, prompts=4, generations=4, vrpo_steps=2, vrpo_batch=4,
               vrpo_n=2, pair_prompts=32, eval_prompts=32)


def model_config(h) -> LLaDAConfig:
    v = h["n_values"] + 3  # values, separator, EOS, mask
    return LLaDAConfig(d_model=h["d_model"], n_heads=4, n_kv_heads=4, n_layers=h["n_layers"],
                       mlp_hidden_size=h["mlp"], vocab_size=v, embedding_size=v, max_sequence_length=64,
                       mask_token_id=v - 1, eos_token_id=v - 2, pad_token_id=v - 2)


def exact_match(model, params, task, prompts, h) -> float:
    """Greedy exact match (one token per step, low-confidence remasking): the RL loop's eval,
    on the rollouts' engine program (`prompts * generations` slots)."""
    return rl_loop.exact_match(model, params, task, prompts, h["answer_len"], slots=h["prompts"] * h["generations"])


def sft_run(mcfg, optim, steps, h, seq_len):
    """(the run's compiled SFT step, its settings): the training system's SFT run of this
    model (`experiments.experiment_run`); the state is donated. The caller holds it for
    every `sft` run with the same settings."""
    built, _, step_fn = experiment_run(mcfg, "sft", optim=optim, steps=steps, batch_size=h["sft_batch"],
                                       seq_len=seq_len)
    return built, step_fn


def sft(state, step_fn, rows, prompt_mask, steps, batch, seed):
    """`steps` SFT steps of `step_fn` (`sft_run`) on batches drawn from `rows`, through the
    training loop's core (`training.loop.run_steps`, no checkpoints)."""
    rng = np.random.default_rng(seed)

    def next_batch(_at, state):
        idx = rng.integers(0, len(rows), batch)
        return {"input_ids": jnp.asarray(rows[idx]), "prompt_mask": jnp.asarray(prompt_mask[idx])}

    return loop.run_steps(state, 0, steps, next_batch=next_batch, update=step_fn)[0]


def preference_pairs(model, params, task, h, sampler, seed, out):
    """VRPO's pairs, on-policy: `pair_generations` samples of the SFT model for each of
    `pair_prompts` fresh prompts, a correct one over an incorrect one
    (`rl.pairs.from_rewards` on the exact-match reward), written to and read back from
    OUT/pairs_seedN.jsonl (`rl.pairs`: the file a user would bring). (chosen, rejected) rows."""
    g, n = h["pair_generations"], h["answer_len"]
    prompts = task.rows(np.random.default_rng([seed, 4]), h["pair_prompts"])[0][:, :task.prompt_len]
    samples = rollout.rollout(model, params, prompts, num_generations=g, rng=jax.random.key(seed + 7),
                              sampling=sampler, slots=h["prompts"] * h["generations"])[:, task.prompt_len:]
    r = rewards.total_reward(("sort_exact",), np.repeat(prompts, g, 0), samples, task)
    path = os.path.join(out, f"pairs_seed{seed}.jsonl")
    pairs_lib.write(path, *pairs_lib.from_rewards(prompts, samples.reshape(len(prompts), g, n), r.reshape(-1, g),
                                                  exclude_id=task.mask))
    pp, cw, cl = pairs_lib.read(path)
    return np.concatenate([pp, cw], 1), np.concatenate([pp, cl], 1)


def fresh_state(params, tx, seed):
    params = jax.tree_util.tree_map(jnp.copy, params)  # the steps donate the state; `params` stays the reference
    return {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": tx.init(params),
            "rng": jax.random.PRNGKey(seed)}


def run(seed: int, mode: str, out: str) -> dict:
    h = FULL if experiment_mode("rl_miniature", mode) else REDUCED
    t0 = time.perf_counter()
    mcfg = model_config(h)
    model = build(mcfg)
    seq_len = h["n_items"] + 1 + h["answer_len"]
    task = SortTask(n_items=h["n_items"], n_values=h["n_values"], vocab_size=mcfg.vocab_size, seq_len=seq_len)
    data_rng = np.random.default_rng([seed, 1])
    rows, prompt_mask = task.rows(data_rng, h["sft_examples"])
    held_out = task.rows(np.random.default_rng([seed, 2]), h["eval_prompts"])[0][:, :task.prompt_len]
    flops_token = flops.train_flops_per_token(mcfg, seq_len)  # forward + backward; forward is a third
    sft_step_flops = flops_token * h["sft_batch"] * seq_len

    # 1. the SFT start
    built, sft_step = sft_run(mcfg, optim_config(h["sft_lr"], 20), h["sft_steps"], h, seq_len)
    state = sft(start_state(built, init_params(mcfg, jax.random.PRNGKey(seed)), seed), sft_step, rows,
                prompt_mask, h["sft_steps"], h["sft_batch"], seed)
    start = state["params"]
    acc_before = exact_match(model, start, task, held_out, h)
    _log(t0, f"SFT start: exact match {acc_before:.3f}")

    def constant(lr):  # RL and the baselines: a constant lr, no weight decay
        return optimizer.make_optimizer(_constant(lr), 1)[0]

    # 2. diffu-GRPO from the SFT start (the reference is the SFT start)
    n, g, mu = h["answer_len"], h["generations"], h["mu"]
    st = rl_step.Static(model, model, constant(h["rl_lr"]), task.prompt_len, task.mask, num_iterations=mu,
                        p_mask_prompt=h["p_mask_prompt"], epsilon=h["epsilon"], beta=h["beta"])
    grpo_update = rl_step.jitted("grpo", st)
    rl_state = fresh_state(start, st.tx, seed)
    sampler = SamplingParams(gen_length=n, block_length=n, steps=n, temperature=h["temperature"])
    prompt_rng = np.random.default_rng([seed, 3])
    reward_trace = []

    def rollouts(i, rl_state):  # step i's prompts, G rollouts each from the current policy, rewards
        prompts = task.rows(prompt_rng, h["prompts"])[0][:, :task.prompt_len]
        seqs = rollout.rollout(model, rl_state["params"], prompts, num_generations=g,
                               rng=jax.random.fold_in(jax.random.key(seed), i), sampling=sampler)
        r = rewards.total_reward(("sort_exact",), np.repeat(prompts, g, 0), seqs[:, task.prompt_len:], task)
        reward_trace.append(float(r.mean()))
        return seqs, r

    def grpo(rl_state, batch):
        seqs, r = batch
        adv = rl_step.grpo.group_advantages(jnp.asarray(r), g)
        return grpo_update(rl_state, start, jnp.asarray(seqs), adv, jnp.ones((len(seqs), n), bool))

    def log_grpo(at, rl_state, m):
        if (at - 1) % 10 == 0:
            _log(t0, f"GRPO step {at - 1}: reward {reward_trace[-1]:.3f} kl {float(m['kl']):.4f} "
                     f"clip {float(m['clip_fraction']):.3f}")

    rl_state = loop.run_steps(rl_state, 0, h["rl_steps"], next_batch=rollouts, update=grpo, report=(log_grpo,))[0]
    acc_after = exact_match(model, rl_state["params"], task, held_out, h)
    _log(t0, f"GRPO: exact match {acc_after:.3f}")
    tokens = h["prompts"] * g * seq_len
    grpo_flops = tokens * flops_token / 3 * (n + mu * (1 + (1 if h["beta"] else 0) + 3)) * h["rl_steps"]

    # 3. SFT continued for the same FLOPs (the same labelled rows, at the SFT schedule's final lr)
    base_steps = max(1, round(grpo_flops / sft_step_flops))
    base_run, sft_base = sft_run(mcfg, _constant(h["sft_continue_lr"]), base_steps, h, seq_len)  # VRPO's too
    b_state = sft(start_state(base_run, start, seed), sft_base, rows, prompt_mask, base_steps, h["sft_batch"],
                  seed + 1)
    acc_base = exact_match(model, b_state["params"], task, held_out, h)
    _log(t0, f"SFT baseline ({base_steps} steps): exact match {acc_base:.3f}")

    # 4. VRPO on preference pairs from the task: a correct sample of the SFT model over an incorrect one
    chosen, rejected = preference_pairs(model, start, task, h, sampler, seed, out)
    st_v = rl_step.Static(model, model, constant(h["vrpo_lr"]), task.prompt_len, task.mask, beta=h["vrpo_beta"],
                          vrpo_n=h["vrpo_n"])
    vrpo_update = rl_step.jitted("vrpo", st_v)
    v_state = fresh_state(start, st_v.tx, seed)
    order_rng = np.random.default_rng([seed, 5])
    vm = {}

    def pair_batch(_at, v_state):
        idx = order_rng.integers(0, len(chosen), h["vrpo_batch"])
        return jnp.asarray(chosen[idx]), jnp.asarray(rejected[idx])

    def keep_metrics(_at, v_state, m):
        vm.update(m)

    v_state = loop.run_steps(v_state, 0, h["vrpo_steps"], next_batch=pair_batch,
                             update=lambda v_state, b: vrpo_update(v_state, start, *b), report=(keep_metrics,))[0]
    acc_vrpo = exact_match(model, v_state["params"], task, held_out, h)
    _log(t0, f"VRPO ({len(chosen)} pairs): exact match {acc_vrpo:.3f}, margin {float(vm['reward_margin']):.3f}")
    vrpo_flops = (h["vrpo_batch"] * 2 * h["vrpo_n"] * seq_len * flops_token / 3 * 4 * h["vrpo_steps"]
                  + h["pair_prompts"] * h["pair_generations"] * seq_len * flops_token / 3 * n)
    vbase_steps = max(1, round(vrpo_flops / sft_step_flops))
    vb_state = sft(start_state(base_run, start, seed), sft_base, rows, prompt_mask, vbase_steps, h["sft_batch"],
                   seed + 2)
    acc_vbase = exact_match(model, vb_state["params"], task, held_out, h)
    return {"seed": seed, "mode": mode, "task": f"sort{h['n_items']}", "eval_prompts": h["eval_prompts"],
            "accuracy_before": acc_before, "accuracy_after": acc_after, "accuracy_sft_baseline": acc_base,
            "accuracy_after_vrpo": acc_vrpo, "accuracy_sft_baseline_vrpo": acc_vbase,
            "grpo_flops": grpo_flops, "sft_baseline_steps": base_steps, "vrpo_flops": vrpo_flops,
            "sft_baseline_vrpo_steps": vbase_steps, "num_pairs": int(len(chosen)),
            "reward_first": reward_trace[0], "reward_last": reward_trace[-1],
            "seconds": round(time.perf_counter() - t0, 1)}


def _log(t0, msg):
    print(f"[{time.perf_counter() - t0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def _constant(lr):
    o = optim_config(lr, 0)
    o.update(schedule="constant", weight_decay=0.0)
    return o


COLUMNS = (("accuracy_before", "SFT start"), ("accuracy_after", "diffu-GRPO"),
           ("accuracy_sft_baseline", "SFT continued (GRPO's FLOPs)"), ("accuracy_after_vrpo", "VRPO"),
           ("accuracy_sft_baseline_vrpo", "SFT continued (VRPO's FLOPs)"))


def table(lines) -> str:
    """Markdown: exact match (%) per seed, then mean and standard deviation over seeds."""
    rows = ["| seed | " + " | ".join(c for _, c in COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for x in lines:
        rows.append(f"| {x['seed']} | " + " | ".join(f"{100 * x[k]:.1f}" for k, _ in COLUMNS) + " |")
    if len(lines) > 1:
        stats = [np.array([x[k] for x in lines]) * 100 for k, _ in COLUMNS]
        rows.append("| mean ± std | " + " | ".join(f"{v.mean():.1f} ± {v.std(ddof=1):.1f}" for v in stats) + " |")
    return "\n".join(rows)


def plot(lines, path):
    """Bars: mean exact match of each arm over the seeds; each seed's arms as dots joined by
    a line (the gains are paired: the seeds' SFT starts differ more than the arms do)."""
    import matplotlib  # lazy: plotting only

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6))
    for i, (k, name) in enumerate(COLUMNS):
        v = np.array([x[k] for x in lines]) * 100
        ax.bar(i, v.mean(), color=f"C{i}", alpha=0.7, yerr=v.std(ddof=1) if len(v) > 1 else None, capsize=4)
        ax.scatter(np.full(len(v), i), v, color="k", s=10, zorder=3)
    for x in lines:
        ax.plot(range(len(COLUMNS)), [100 * x[k] for k, _ in COLUMNS], color="0.4", lw=0.8, zorder=2)
    ax.set_xticks(range(len(COLUMNS)), [n.replace(" (", "\n(") for _, n in COLUMNS], fontsize=8)
    ax.set_ylabel("exact match on held-out prompts (%)")
    ax.set_title(f"sort {lines[0]['task'][4:]} values: RL from an SFT start ({len(lines)} seeds)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def define_flags(fv):
    """The flags of `python -m llada_jax.experiments.rl_miniature`, on absl FlagValues `fv`."""
    from absl import flags

    flags.DEFINE_string("out", None, "output directory (results.jsonl is appended to), required", flag_values=fv)
    flags.DEFINE_multi_integer("seed", None, "repeatable; default 0", flag_values=fv)
    flags.DEFINE_enum("mode", "full", ("full", "reduced"), "reduced: a smaller run, seconds", flag_values=fv)
    flags.DEFINE_boolean("plot", False, "also write OUT/rl_miniature.png and .md", flag_values=fv)


def main(argv=None):
    """Run the seeds, `argv` without the program name (default sys.argv[1:]); returns their lines."""
    a = cli.parse(define_flags, argv, __doc__.splitlines()[0], required=("out",))
    with cli.user_errors():
        os.makedirs(a.out, exist_ok=True)
        lines = []
        for seed in a.seed or [0]:
            line = run(seed, a.mode, a.out)
            print(json.dumps(line), flush=True)
            lines.append(line)
        with open(os.path.join(a.out, "results.jsonl"), "a") as f:
            f.writelines(json.dumps(x) + "\n" for x in lines)
        if a.plot:
            plot(lines, os.path.join(a.out, "rl_miniature.png"))
            with open(os.path.join(a.out, "rl_miniature.md"), "w") as f:
                f.write(table(lines) + "\n")
    return lines


if __name__ == "__main__":
    main(sys.argv[1:])
