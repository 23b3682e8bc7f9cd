"""The RL run: `train_rl(config, workdir)`, what `python -m llada_jax.rl` runs.

It is the training loop's run with another update and other batches: the same set-up
(`training.run.open_run`: workdir claim and lock, the config rules of `config.rules_rl`,
mesh, `config.mesh.rules`, model, optimizer, state shardings, checkpoints), the same loop core
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

import time

import jax
import jax.numpy as jnp
import numpy as np

from llada_jax.checkpoint import load as checkpoint_load
from llada_jax.checkpoint import manager
from llada_jax.objectives import grpo
from llada_jax.parallel import sharding
from llada_jax.training import loop, metrics, preemption, train_state
from llada_jax.training import run as run_lib
from llada_jax.rl import pairs as pairs_lib
from llada_jax.rl import rewards as rewards_lib
from llada_jax.rl import rollout as rollout_lib
from llada_jax.rl import step as rl_step
from llada_jax.rl.rewards import expected_answer
from llada_jax.sampling.params import SamplingParams

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


def exact_match(model, params, task, prompts, answer_len, *, slots=None, block_width=None) -> float:
    """Greedy exact match of `prompts` (one token per step, low-confidence remasking), through
    the engine (`rollout.rollout`; slots / block_width: as there, to share the rollouts' program)."""
    block = model.config.block_size or answer_len  # a block-causal model denoises its own blocks
    greedy = SamplingParams(gen_length=answer_len, block_length=block, steps=answer_len)
    out = rollout_lib.rollout(model, params, prompts, num_generations=1, rng=jax.random.key(0), sampling=greedy,
                              slots=slots, block_width=block_width)
    want = expected_answer(task, prompts, answer_len)
    return float(np.mean(np.all(out[:, prompts.shape[1]:] == want, axis=1)))


def train_rl(config, workdir: str, *, devices=None, hooks=(), allow_changes=()):
    """Run (or resume) RL in `workdir`. Returns (state, last logged metrics); the metrics
    hold "signal" when SIGTERM/SIGINT ended the run after saving a checkpoint. A resume
    with another reference, group size or model is refused unless `allow_changes` names it."""
    with run_lib.open_run(config, workdir, devices=devices, purpose="rl") as run:
        return _run(run, workdir, hooks, tuple(allow_changes))


def _run(run: run_lib.Run, workdir, hooks, allow_changes=()):
    config, mesh, model, mcfg, tx, rules = run.config, run.mesh, run.model, run.model_config, run.tx, run.rules
    abstract, shardings, ckpt = run.abstract, run.shardings, run.checkpointer
    r, d, t = config.rl, config.data, config.train
    # The reference: LoRA's frozen base, or (no LoRA) the params of init_from, restored once more.
    frozen = ref_params = lora_base = None
    if "frozen" in abstract:  # a resumed run keeps the base step it recorded
        lora_base, frozen = checkpoint_load.lora_base(
            workdir, r.init_from, manager.abstract_like(abstract["frozen"], shardings["frozen"]),
            ckpt.latest_step() is not None, jax.process_index() == 0)
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
        state = train_state.init_state(model, tx, mesh, t.seed, shardings, params=params, frozen=frozen, rules=rules)
    loop.save_run_info(workdir, run.saved_info, loop.run_info(config, mcfg, None, lora_base, rl=r.algorithm),
                       None if restored is None else restored[0], allow_changes)

    if r.algorithm == "grpo":
        it, _ = run.data
        task = it.task
        prompt_len = task.prompt_len
        eval_prompts = task.rows(np.random.default_rng([t.seed, 2]), r.eval_prompts)[0][:, :prompt_len]
        names = rewards_lib.parse(r.rewards)
        sampling = rollout_lib.sampling_params(r)
        # the rollouts and the eval share one engine program: slots and window of the rollouts
        engine_shape = dict(slots=d.batch_size * r.num_generations, block_width=mcfg.block_size or r.gen_length)
    else:
        pp, cw, cl = pairs_lib.read(r.pairs, eos_id=mcfg.eos_token_id, vocab_size=mcfg.vocab_size,
                                     mask_id=mcfg.mask_token_id)
        prompt_len = pp.shape[1]
        it = PairIterator(np.concatenate([pp, cw], 1), np.concatenate([pp, cl], 1), batch_size=d.batch_size,
                          seed=t.seed)
        task = None
    if data_state is not None:
        it.set_state(data_state)
    st = rl_step.Static(model, rl_step.reference_model(model), tx, prompt_len, mcfg.mask_token_id,
                        num_iterations=r.num_iterations, p_mask_prompt=r.p_mask_prompt, epsilon=r.epsilon,
                        beta=r.beta, vrpo_n=r.vrpo_n)
    update = rl_step.jitted(r.algorithm, st)  # compiled once per run: the loop holds it
    writer = metrics.Writer(workdir, enabled=jax.process_index() == 0)

    def next_batch(step, state):
        batch = next(it)
        if r.algorithm == "vrpo":
            return batch
        prompts = batch["input_ids"][:, :prompt_len]  # GRPO: the rollouts of this step's prompts, scored
        seqs = rollout_lib.rollout(model, train_state.full_params(state), prompts, num_generations=r.num_generations,
                                   rng=jax.random.fold_in(jax.random.key(t.seed), step), sampling=sampling,
                                   **engine_shape)
        completions = seqs[:, prompt_len:]
        rew = rewards_lib.total_reward(names, np.repeat(prompts, r.num_generations, 0), completions, task)
        want = expected_answer(task, np.repeat(prompts, r.num_generations, 0), completions.shape[1])
        return {"seqs": seqs, "rewards": rew, "completions": completions,
                "accuracy": float(np.mean(np.all(completions == want, axis=1)))}

    def rl_update(state, batch):
        if r.algorithm == "vrpo":
            # device metrics: the loop reads them at logging steps only (run_steps' host_step)
            return update(state, ref_params, jnp.asarray(batch["chosen"]), jnp.asarray(batch["rejected"]))
        rew = batch["rewards"]
        adv = grpo.group_advantages(jnp.asarray(rew), r.num_generations, r.scale_rewards)
        state, m = update(state, ref_params, jnp.asarray(batch["seqs"]), adv, jnp.ones(batch["completions"].shape, bool))
        m = {k: float(v) for k, v in m.items()}
        m.update(reward_mean=float(rew.mean()), reward_std=float(rew.std()), accuracy=batch["accuracy"])
        return state, m

    last, tick = {}, [time.perf_counter(), int(np.asarray(state["step"]))]

    def host_step(step):
        return step % t.log_every == 0 or step == 1 or bool(t.eval_every and step % t.eval_every == 0)

    def log(step, state, m):
        nonlocal last
        if step % t.log_every == 0 or step == t.steps or step == 1:
            last = {**{k: float(v) for k, v in m.items()},
                    "step_time_s": (time.perf_counter() - tick[0]) / max(step - tick[1], 1)}
            writer.scalars(step, last)
            print(f"[rl step {step}] " + " ".join(f"{k} {v:.4g}" for k, v in sorted(last.items())), flush=True)
            tick[:] = time.perf_counter(), step

    def evaluate(step, state, m):
        if task is not None and t.eval_every and (step % t.eval_every == 0 or step == t.steps):
            acc = exact_match(model, train_state.full_params(state), task, eval_prompts, r.gen_length, **engine_shape)
            writer.scalars(step, {"accuracy": acc}, prefix="eval")
            print(f"[rl step {step}] eval exact match {acc:.4f} on {len(eval_prompts)} prompts", flush=True)

    stop, restore_handlers = preemption.catch_stop_signals()
    try:
        with jax.set_mesh(mesh), sharding.logical_rules_context(rules):
            if int(np.asarray(state["step"])) == 0:
                evaluate(0, state, {})  # the start's accuracy, which the run's gain is measured against
            state, _, signal_number = loop.run_steps(
                state, int(np.asarray(state["step"])), t.steps, next_batch=next_batch, update=rl_update,
                hooks=hooks, report=(log, evaluate), stop=stop, host_step=host_step,
                checkpoints=loop.Checkpoints(ckpt, it.get_state, workdir, say=lambda s: print(s, flush=True)))
        if signal_number is not None:
            last = {**last, "signal": signal_number}
    finally:
        writer.close()
        restore_handlers()
    return state, last
