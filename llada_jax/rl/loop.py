"""The RL run: `train_rl(config, workdir)`, what `python -m llada_jax.rl` runs.

It is the training loop's run with another update and other batches: the same run
builder (`training.run`: the config's rules (`config.rules.check_rl`), workdir claim and
lock, mesh and `config.mesh.rules`, model, optimizer, state shardings), the same loop core
(`loop.run_steps`: the non-finite guard, Orbax checkpoints with the data iterator's
state, the SIGTERM/SIGINT stop: save, exit status 75), resume, metrics.jsonl. The workdir is a
training workdir (run.json kind "train", with "rl": the algorithm), so `generate`,
`evaluation` and `export` read it as any other.

GRPO step k: the prompts are batch k of the synthetic task (`data.batch_size` prompts,
a pure function of (train.seed, k)); G rollouts each from the current policy with rng
fold_in(key(train.seed), k), rewards, group advantages, then mu optimizer updates.
VRPO step k: batch k of the preference pairs (a permutation per epoch from train.seed).
Everything a step draws comes from the step number or the saved state, so a resumed run
is bitwise the run that was not interrupted.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from llada_jax.checkpoint import load, manager
from llada_jax.checkpoint import workdir as workdir_lib
from llada_jax.config import rules
from llada_jax.objectives import grpo
from llada_jax.training import inputs, loop, metrics, preemption, run as run_lib
from llada_jax.training.state import full_params
from llada_jax.rl import pairs as pairs_lib
from llada_jax.rl import rewards as rewards_lib
from llada_jax.rl import rollout as rollout_lib
from llada_jax.rl import step as rl_step
from llada_jax.rl.rewards import expected_answer



def validate(config, num_devices: int):
    """`llada_jax.config.rules.check_rl` (kept for callers of this name)."""
    rules.check_rl(config, num_devices)


class PairIterator:
    """Batches of preference pairs; epoch e is a permutation drawn from (seed, e), so batch k
    is a pure function of (seed, k). State: {"batch": k}."""

    def __init__(self, chosen, rejected, *, batch_size: int, seed: int):
        if len(chosen) < batch_size:
            raise ValueError(f"config.data.batch_size={batch_size}: more than the {len(chosen)} pairs of "
                             "config.rl.pairs")
        self.chosen, self.rejected, self.batch_size, self.seed, self.batch = chosen, rejected, batch_size, seed, 0

    def __next__(self):
        per_epoch = len(self.chosen) // self.batch_size
        epoch, i = divmod(self.batch, per_epoch)
        idx = np.random.default_rng([self.seed, epoch]).permutation(len(self.chosen))
        idx = idx[i * self.batch_size:(i + 1) * self.batch_size]
        self.batch += 1
        return {"chosen": self.chosen[idx], "rejected": self.rejected[idx]}

    def get_state(self):
        return {"batch": self.batch}

    def set_state(self, state):
        self.batch = int(state["batch"])


def exact_match(model, params, task, prompts, answer_len) -> float:
    """Greedy exact match of `prompts` (one token per step, low-confidence remasking)."""
    out = rollout_lib.rollout(model, params, prompts, num_generations=1, rng=jax.random.key(0),
                              sampler=dict(steps=answer_len, gen_length=answer_len, block_length=answer_len))
    want = expected_answer(task, prompts, answer_len)
    return float(np.mean(np.all(out[:, prompts.shape[1]:] == want, axis=1)))


def train_rl(config, workdir: str, *, devices=None, hooks=()):
    """Run (or resume) RL in `workdir`. Returns (state, last logged metrics); the metrics
    hold "signal" when SIGTERM/SIGINT ended the run after saving a checkpoint."""
    devices = list(jax.devices() if devices is None else devices)

    def refuse(saved_info):
        if saved_info is not None and "rl" not in saved_info:
            raise workdir_lib.WorkdirError(
                f"--workdir={workdir!r} holds a training run that is not an RL run; RL writes a new --workdir "
                f"(start from that one with --config.rl.init_from={workdir})")

    with run_lib.claimed(config, workdir, rules.check_rl, devices, refuse=refuse):
        return _run(config, workdir, devices, hooks)


def _run(config, workdir, devices, hooks):
    r, d, t = config.rl, config.data, config.train
    tokenizer = inputs.load_tokenizer(config, workdir) if d.source != "synthetic" else None
    run = run_lib.build(config, devices, tokenizer)
    model, abstract, shardings = run.model, run.abstract, run.shardings
    mcfg = model.config
    ckpt = run_lib.checkpointer(config, workdir)
    # The reference: LoRA's frozen base, or (no LoRA) the params of init_from, restored once more.
    frozen = ref_params = None
    if "frozen" in abstract:
        _, frozen = load.load_base(r.init_from, manager.abstract_like(abstract["frozen"], shardings["frozen"]))
    else:
        _, ref_params = manager.restore_params(r.init_from, manager.abstract_like(
            abstract["params"], shardings["params"]))
    restored = ckpt.restore(manager.abstract_like(abstract, shardings))
    if restored is not None:
        step, state, data_state = restored
        if frozen is not None:
            state["frozen"] = frozen
        print(f"resumed from step {step} in {workdir}", flush=True)
    else:
        data_state = None
        params = None if ref_params is None else jax.tree_util.tree_map(jnp.copy, ref_params)
        state = run.init_state(t.seed, params=params, frozen=frozen)
    if jax.process_index() == 0:
        workdir_lib.write_run_info(workdir, "train", config=json.loads(config.to_json()),
                                   model=dataclasses.asdict(mcfg), tokenizer=None, rl=r.algorithm,
                                   **({"lora_base": {"workdir": os.path.abspath(r.init_from), "step": None}}
                                      if frozen is not None else {}))

    if r.algorithm == "grpo":
        it, _ = inputs.iterators(config, None, process_index=0, process_count=1)
        task = it.task
        prompt_len = task.prompt_len
        eval_prompts = task.rows(np.random.default_rng([t.seed, 2]), r.eval_prompts)[0][:, :prompt_len]
        names = rewards_lib.parse(r.rewards)
        sampler = rollout_lib.sampler_options(r)
    else:
        pp, cw, cl = pairs_lib.read(r.pairs, eos_id=mcfg.eos_token_id, vocab_size=mcfg.vocab_size)
        prompt_len = pp.shape[1]
        it = PairIterator(np.concatenate([pp, cw], 1), np.concatenate([pp, cl], 1), batch_size=d.batch_size,
                          seed=t.seed)
        task = None
    if data_state is not None:
        it.set_state(data_state)
    st = rl_step.Static(model, rl_step.reference_model(model), run.tx, prompt_len, mcfg.mask_token_id,
                        num_iterations=r.num_iterations, p_mask_prompt=r.p_mask_prompt, epsilon=r.epsilon,
                        beta=r.beta, vrpo_n=r.vrpo_n)
    update = rl_step.jitted(r.algorithm, st)  # compiled once per run: the loop holds it
    writer = metrics.Writer(workdir, enabled=jax.process_index() == 0)

    def next_batch(step, state):
        batch = next(it)
        if r.algorithm == "vrpo":
            return batch
        prompts = batch["input_ids"][:, :prompt_len]  # GRPO: the rollouts of this step's prompts, scored
        seqs = rollout_lib.rollout(model, full_params(state), prompts, num_generations=r.num_generations,
                                   rng=jax.random.fold_in(jax.random.key(t.seed), step), sampler=sampler)
        completions = seqs[:, prompt_len:]
        rew = rewards_lib.total_reward(names, np.repeat(prompts, r.num_generations, 0), completions, task)
        want = expected_answer(task, np.repeat(prompts, r.num_generations, 0), completions.shape[1])
        return {"seqs": seqs, "rewards": rew, "completions": completions,
                "accuracy": float(np.mean(np.all(completions == want, axis=1)))}

    def rl_update(state, batch):
        if r.algorithm == "vrpo":
            state, m = update(state, ref_params, jnp.asarray(batch["chosen"]), jnp.asarray(batch["rejected"]))
            return state, {k: float(v) for k, v in m.items()}
        rew = batch["rewards"]
        adv = grpo.group_advantages(jnp.asarray(rew), r.num_generations, r.scale_rewards)
        state, m = update(state, ref_params, jnp.asarray(batch["seqs"]), adv, jnp.ones(batch["completions"].shape, bool))
        m = {k: float(v) for k, v in m.items()}
        m.update(reward_mean=float(rew.mean()), reward_std=float(rew.std()), accuracy=batch["accuracy"])
        return state, m

    last, tick = {}, [time.perf_counter()]

    def log(step, state, m):
        nonlocal last
        if step % t.log_every == 0 or step == t.steps or step == 1:
            last = {**m, "step_time_s": time.perf_counter() - tick[0]}
            writer.scalars(step, last)
            print(f"[rl step {step}] " + " ".join(f"{k} {v:.4g}" for k, v in sorted(last.items())), flush=True)
        tick[0] = time.perf_counter()

    def evaluate(step, state, m):
        if task is not None and t.eval_every and (step % t.eval_every == 0 or step == t.steps):
            acc = exact_match(model, full_params(state), task, eval_prompts, r.gen_length)
            writer.scalars(step, {"accuracy": acc}, prefix="eval")
            print(f"[rl step {step}] eval exact match {acc:.4f} on {len(eval_prompts)} prompts", flush=True)

    stop, restore_handlers = preemption.catch_stop_signals()
    try:
        with run.context():  # the mesh and config.mesh.rules
            state, _, signal_number = loop.run_steps(
                state, int(np.asarray(state["step"])), t.steps, next_batch=next_batch, update=rl_update,
                hooks=hooks, report=(log, evaluate), stop=stop,
                checkpoints=loop.Checkpoints(ckpt, it.get_state, workdir, say=lambda s: print(s, flush=True)))
        if signal_number is not None:
            last = {**last, "signal": signal_number}
    finally:
        ckpt.close()
        writer.close()
        restore_handlers()
    return state, last
