"""The training loop, evaluation, and the command line of `python -m llada_jax.train`.

`train_and_evaluate(config, workdir)`: the run's set-up is `training.run.open_run` (the
workdir claimed and locked, the config resolved and checked by `config.rules` before
anything compiles, then the mesh, model, optimizer, shardings, data and checkpoints); here
the state is restored from the workdir's latest checkpoint, or from `train.init_from`, or
made fresh (always in its shardings), then the loop steps, logs, evaluates and
checkpoints. A checkpoint that does not match the config stops the run before anything
is written. SIGTERM/SIGINT save a checkpoint and end the run, on every process
after the same step (`training.preemption`); the command line then exits with
EXIT_PREEMPTED (75) so a scheduler requeues it. A non-finite loss,
gradient norm or updated parameter stops it with `NonFiniteLossError` before that step
is saved, keeping the last good checkpoint.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import json
import logging
import math
import os
import sys
import time
from typing import Callable, NamedTuple

import jax
import numpy as np
from jax.experimental import multihost_utils

from llada_jax import cli
from llada_jax.checkpoint import load, manager
from llada_jax.checkpoint import workdir as workdir_lib
from llada_jax.model import flops
from llada_jax.parallel import sharding
from llada_jax.sampling import sampler
from llada_jax.training import inherit, metrics, preemption, step, train_state
from llada_jax.training import run as run_lib

log = logging.getLogger(__name__)
# Exit status of `python -m llada_jax.train` after SIGTERM/SIGINT saved a checkpoint:
# EX_TEMPFAIL ("try again later"); launch/slurm_gpu.sh requeues the job on it.
EXIT_PREEMPTED = 75


class NonFiniteLossError(RuntimeError):
    pass


def _host(tree):
    """Host copies of replicated (possibly multi-process) arrays; other leaves as they are."""
    return jax.tree_util.tree_map(lambda x: np.asarray(x.addressable_data(0)) if isinstance(x, jax.Array) else x, tree)


def run_info(config, mcfg, tokenizer, lora_base=None, **extra) -> dict:
    """The run.json fields of a training (or RL) run, as `workdir_lib.write_run_info` takes them."""
    return dict(config=json.loads(config.to_json()), model=dataclasses.asdict(mcfg),
                tokenizer=None if tokenizer is None else os.path.abspath(tokenizer.path),
                **({} if tokenizer is None else {"tokenizer_sha256": tokenizer.fingerprint}),
                # the frozen base of a LoRA run, by reference (llada_jax.checkpoint.load)
                **({} if lora_base is None else {"lora_base": lora_base}), **extra)


def save_run_info(workdir, saved_info, info: dict, resumed_step, allow_changes=()):
    """Write run.json `info`; resuming, first `workdir_lib.check_resume` (WorkdirError for a
    changed setting not in `allow_changes`) and keep the history of allowed changes."""
    changes = list((saved_info or {}).get("changes", []))
    if resumed_step is not None and saved_info:
        changes += workdir_lib.check_resume(workdir, saved_info, info, resumed_step, allow_changes)
    if jax.process_index() == 0:
        fields = {k: v for k, v in info.items() if k not in ("kind", "changes")}
        workdir_lib.write_run_info(workdir, "train", **fields, **({"changes": changes} if changes else {}))


def _mismatch_error(e, workdir, saved_info, config, source):
    """The error for a readable checkpoint that does not match: what differs, what changed
    in the config since the run that wrote it, and how to start fresh instead."""
    changed = workdir_lib.config_diff((saved_info or {}).get("config"), json.loads(config.to_json()))
    since = (f"the config changed since the run that wrote this workdir (run.json -> now): {'; '.join(changed)}. "
             if changed else "")
    if source == "init_from":
        return manager.CheckpointMismatchError(e.step, e.directory, e.details + [
            f"config.train.init_from={config.train.init_from!r} holds another model shape than its run.json "
            f"(which this run inherited); restore that directory's run.json or checkpoints"])
    return ValueError(
        f"{since}{e}. Nothing was written. To resume, rerun with the old values; to start a fresh "
        f"run, use a new --workdir (with --config.train.init_from={workdir} to start from these params "
        f"when the model shape is unchanged)")


def _decode(tokenizer, ids):
    ids = [int(i) for i in ids]
    return " ".join(map(str, ids)) if tokenizer is None else tokenizer.decode(ids)


def samples(model, params, batch, tokenizer, config, mcfg):
    """A few generated continuations (or SFT answers) of held-out prompts, as text."""
    t, out = config.train, {}
    ids = np.asarray(batch["input_ids"])
    for i in range(min(t.num_samples, ids.shape[0])):
        if "prompt_mask" in batch:
            prompt = ids[i][np.asarray(batch["prompt_mask"][i])]
        else:
            prompt = ids[i][: min(t.sample_prompt_len, ids.shape[1])]
        prompt = multihost_utils.broadcast_one_to_all(prompt)
        kw = {} if tokenizer is None else dict(eot_id=tokenizer.eot_id)
        gen = sampler.generate(model, params, np.asarray(prompt)[None], steps=t.sample_steps,
                                gen_length=t.sample_gen_length, block_length=mcfg.block_size or t.sample_gen_length,
                                **kw)
        gen = np.asarray(_host(gen))[0, len(prompt):]
        out[f"sample_{i}"] = f"{_decode(tokenizer, prompt)} ⟶ {_decode(tokenizer, gen)}"
    return out


def evaluate(eval_fn, state, make_eval_iter, mesh, config, key):
    """Mean held-out loss over eval_batches (fixed noise) and bits per token."""
    it, losses, batch = make_eval_iter(), [], None
    for i in range(config.train.eval_batches):
        batch = next(it)
        g = sharding.global_batch(batch, mesh, config.data.batch_size)
        losses.append(float(_host(eval_fn(train_state.full_params(state), g, jax.random.fold_in(key, i)))))
    loss = float(np.mean(losses))
    return {"loss": loss, "bits_per_token": loss / math.log(2)}, batch


def train_and_evaluate(config, workdir: str, *, devices=None, hooks=(), allow_changes=()):
    """Run (or resume) the training in `workdir`. Returns the final state and the last
    logged metrics; those hold "signal" (its number) when SIGTERM/SIGINT ended the run
    early. `hooks`: callables (step, state, metrics) run after each step. `allow_changes`:
    settings a resume may change (`workdir_lib.check_resume`; --allow_change).

    WorkdirError (a ValueError) for a workdir this run must not write (an import
    workdir, a foreign directory, one locked by another run)."""
    with run_lib.open_run(config, workdir, devices=devices, purpose="train") as run:
        compiler = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="llada-compile")
        try:
            return _train(run, workdir, hooks, tuple(allow_changes), compiler)
        finally:  # an error does not wait for a compile nobody needs
            compiler.shutdown(wait=False, cancel_futures=True)


def _train(run: run_lib.Run, workdir, hooks, allow_changes, compiler):
    primary = jax.process_index() == 0
    config, mesh, model, mcfg, tokenizer = run.config, run.mesh, run.model, run.model_config, run.tokenizer
    abstract, shardings, ckpt, saved_info = run.abstract, run.shardings, run.checkpointer, run.saved_info
    d, t = config.data, config.train
    st, batch_spec = run_lib.train_static(run)
    train_it, make_eval_iter = run.data
    # The train step and the held-out loss compile in `compiler`'s thread while the state is
    # restored or initialised: a compile-bound short run starts sooner (tiny, one step: ~1 s).
    abstract_state, abstract_batch = manager.abstract_like(abstract, shardings), run_lib.abstract_batch(run)
    step_fn = step.compile_ahead(compiler, step.compile_step(st, mesh, shardings, batch_spec),
                                 abstract_state, abstract_batch)
    eval_fn = step.compile_eval(st, mesh, train_state.full_params(shardings), batch_spec)
    eval_key = jax.random.PRNGKey(t.seed + 1)
    if t.eval_every and t.eval_batches:
        key_type = jax.ShapeDtypeStruct(eval_key.shape, eval_key.dtype, sharding=sharding.replicated(mesh))
        eval_fn = step.compile_ahead(compiler, eval_fn, train_state.full_params(abstract_state), abstract_batch,
                                     key_type)
    try:
        restored = ckpt.restore(abstract_state)
    except manager.CheckpointMismatchError as e:
        raise _mismatch_error(e, workdir, saved_info, config, "resume") from None
    lora_base, frozen = None, None
    if "frozen" in abstract:  # LoRA: the base of a resumed run is the one it recorded
        lora_base, frozen = load.lora_base(workdir, t.init_from, manager.abstract_like(
            abstract["frozen"], shardings["frozen"]), restored is not None, primary)
    if restored is not None:
        start, state, data_state = restored
        if frozen is not None:
            state["frozen"] = frozen
        if data_state is not None:
            train_it.set_state(data_state)
        print(f"resumed from step {start} in {workdir}", flush=True)
    elif frozen is not None:
        state = train_state.init_state(model, run.tx, mesh, t.seed, shardings, frozen=frozen, rules=run.rules)
    elif t.init_from:
        try:
            _, params = inherit.init_params(t.init_from, manager.abstract_like(
                abstract["params"], shardings["params"]))
        except manager.CheckpointMismatchError as e:
            raise _mismatch_error(e, workdir, saved_info, config, "init_from") from None
        state = train_state.init_state(model, run.tx, mesh, t.seed, shardings, params=params, rules=run.rules)
        print(f"initialised the params from {t.init_from}", flush=True)
    else:
        state = train_state.init_state(model, run.tx, mesh, t.seed, shardings, rules=run.rules)
    save_run_info(workdir, saved_info, run_info(config, mcfg, tokenizer, lora_base),
                  None if restored is None else restored[0], allow_changes)

    writer = metrics.Writer(workdir, enabled=primary)
    @functools.cache
    def peak():  # of the MFU figure: measured at the first logged throughput (none in a one-step run)
        if t.peak_flops:
            return t.peak_flops
        compiler.submit(lambda: None).result()  # alone: after the background compiles (one worker)
        return flops.measure_peak_flops()
    flops_step = flops.train_flops_per_token(mcfg, d.seq_len) * d.batch_size * d.seq_len

    stop, restore_handlers = preemption.catch_stop_signals()
    from tqdm import tqdm

    start = int(_host(state["step"]))
    bar = tqdm(total=t.steps, initial=start, disable=not primary, dynamic_ncols=True)
    last, sums, window = {}, {}, {"tick": None, "n": 0}

    def log(at, state, m):
        nonlocal last, sums
        for k, v in m.items():
            sums[k] = sums.get(k, 0.0) + float(v)
        window["n"] += 1
        if window["tick"] is None:  # the first step compiles: log it without throughput, time from its end
            writer.scalars(at, {k: float(v) for k, v in m.items()})
            window.update(tick=time.perf_counter(), n=0)
            sums = {}
        elif at % t.log_every == 0 or at == t.steps:
            dt, n = time.perf_counter() - window["tick"], window["n"]
            last = {k: v / n for k, v in sums.items()}
            last.update(tokens_per_s=n * d.batch_size * d.seq_len / dt,
                        mfu=n * flops_step / dt / (peak() * len(run.devices)), step_time_s=dt / n)
            writer.scalars(at, last)
            bar.set_postfix(loss=f"{last['loss']:.3f}", acc=f"{last['masked_accuracy']:.2f}")
            window.update(tick=time.perf_counter(), n=0)
            sums = {}

    def eval_and_sample(at, state, m):
        if t.eval_every and t.eval_batches and (at % t.eval_every == 0 or at == t.steps):
            ev, eval_batch = evaluate(eval_fn, state, make_eval_iter, mesh, config, eval_key)
            writer.scalars(at, ev, prefix="eval")
            if t.num_samples:
                texts = samples(model, train_state.full_params(state), eval_batch, tokenizer, config, mcfg)
                writer.texts(at, texts)
                for k, v in texts.items():
                    bar.write(f"[step {at}] {k}: {v!r}")
            bar.write(f"[step {at}] eval loss {ev['loss']:.4f}, {ev['bits_per_token']:.4f} bits/token")
            window["tick"] = time.perf_counter() if window["tick"] is not None else None
        bar.update(1)

    first = start + 1

    def host_step(at):  # the steps whose metrics are read: the first (it compiles), logging, eval
        return at == first or at % t.log_every == 0 or bool(t.eval_every and at % t.eval_every == 0)

    try:
        state, _, signal_number = run_steps(
            state, start, t.steps, update=step_fn, host_step=host_step,
            next_batch=lambda at, state: sharding.global_batch(next(train_it), mesh, d.batch_size),
            hooks=hooks, report=(log, eval_and_sample), stop=stop,
            checkpoints=Checkpoints(ckpt, train_it.get_state, workdir, say=bar.write))
        if signal_number is not None:
            last = {**last, "signal": signal_number}
    finally:
        bar.close()
        writer.close()
        restore_handlers()
    return state, last


class Checkpoints(NamedTuple):
    """Checkpointing of a run_steps loop: the Checkpointer, () -> the data iterator's state
    (saved with the training state so a resumed run draws the same batches), the workdir
    (named in errors) and how to say one line (the stop message)."""

    ckpt: manager.Checkpointer
    data_state: Callable[[], object]
    workdir: str
    say: Callable[[str], None] = print


def run_steps(state, at: int, steps: int, *, next_batch, update, hooks=(), report=(),
              stop: preemption.Stop | None = None, checkpoints: Checkpoints | None = None,
              host_step: Callable[[int], bool] | None = None):
    """The one loop core of every training loop (`train_and_evaluate`, the RL loop of
    `llada_jax.rl`, `llada_jax.experiments.train_model` and the RL miniature): run steps
    `at`+1 .. `steps`, each: batch = next_batch(at, state) (at: the steps done so far)
    -> state, m = update(state, batch) (m: device arrays or numbers). The metrics reach the
    host only at a sync step: every step when `host_step` is None or `hooks` are given,
    else where host_step(at) is true, a checkpoint is due, a stop is requested and at the
    last step; in between JAX dispatches the next step while the current one runs. At a
    sync step, for each step since the last one, in order: with `checkpoints`, stop on a
    non-finite loss, gradient or state (`check_finite`; no later state has been saved) ->
    hooks(at, state, m) (the caller's); then a checkpoint save when due; then for each
    report(at, state, m) (the loop's logging and evaluation; `state` is the latest,
    which is that step's at the sync step itself) -> when `stop` (from
    `preemption.catch_stop_signals`) requests it after this step: a forced checkpoint,
    one line, and the end; with several processes all of them stop after the same step
    (`preemption.Stop.requested`, asked after every step). A run that finishes saves its
    last step (forced).

    What differs between the loops is passed in: batch production (the data pipeline,
    rollouts, preference pairs, in-memory rows), the jitted update, logging, which steps
    sync, and checkpointing on or off. Returns (state, at, the signal number or None)."""
    every = checkpoints.ckpt.every if checkpoints is not None else 0
    pending = []
    if stop is not None:
        stop.begin(at)
    while at < steps:
        state, m = update(state, next_batch(at, state))
        at += 1
        pending.append((at, m))
        if not (host_step is None or hooks or (stop is not None and stop.requested(at))
                or at == steps or host_step(at) or (every and at % every == 0)):
            continue
        done = list(zip([s for s, _ in pending], _host([m for _, m in pending])))
        pending = []
        for s, m in done:
            if checkpoints is not None:
                check_finite(m, s, checkpoints.ckpt, checkpoints.workdir)
            for h in hooks:
                h(s, state, m)
        if checkpoints is not None:
            checkpoints.ckpt.save(at, state, checkpoints.data_state())
        for s, m in done:
            for h in report:
                h(s, state, m)
        if stop is not None and stop.requested(at):  # one process: also a signal during the hooks
            if checkpoints is not None:
                checkpoints.ckpt.save(at, state, checkpoints.data_state(), force=True)
                checkpoints.say(f"signal {stop.signal}: saved a checkpoint at step {at}; exiting")
            return state, at, int(stop.signal)
    if checkpoints is not None:
        checkpoints.ckpt.save(at, state, checkpoints.data_state(), force=True)
    return state, at, None


def check_finite(m: dict, at: int, ckpt, workdir: str, keys=("loss", "grad_norm")):
    """Pop m["state_finite"]; NonFiniteLossError when it is False or a `keys` metric is not
    finite, before this step's state can be saved (the last good checkpoint is kept)."""
    finite = bool(m.pop("state_finite", True))
    bad = [f"{k} is {float(m[k])}" for k in keys if not math.isfinite(float(m[k]))]
    if bad or not finite:
        ckpt.wait()
        kept = ckpt.latest_step()
        what = ", ".join(bad + ([] if finite else ["the updated state (params, optimizer) is not finite"]))
        raise NonFiniteLossError(f"{what} at step {at}: stopping; the last good checkpoint "
                                 f"(step {kept}) is kept in {manager.checkpoint_dir(workdir)}")


def init_distributed():
    """Join a multi-process run when the environment describes one: JAX_COORDINATOR_ADDRESS
    with JAX_NUM_PROCESSES and JAX_PROCESS_ID, or a cluster JAX detects itself (SLURM,
    Open MPI, Cloud TPU). CPU processes use gloo collectives."""
    env = os.environ
    if env.get("JAX_PLATFORMS", "") == "cpu" or env.get("LLADA_CPU_COLLECTIVES") == "gloo":
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if "JAX_COORDINATOR_ADDRESS" in env:
        jax.distributed.initialize(env["JAX_COORDINATOR_ADDRESS"], int(env["JAX_NUM_PROCESSES"]),
                                   int(env["JAX_PROCESS_ID"]))
    elif any(k in env for k in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "TPU_WORKER_HOSTNAMES")):
        jax.distributed.initialize()


def exit_status(last: dict) -> int:
    """The command line's exit status for train_and_evaluate's last metrics: 0 when the
    run finished, EXIT_PREEMPTED when a signal stopped it after saving a checkpoint."""
    if "signal" not in last:
        return 0
    print(f"stopped by signal {last['signal']} after saving a checkpoint: exit status {EXIT_PREEMPTED} "
          f"(rerun the same command to resume)", file=sys.stderr)
    return EXIT_PREEMPTED


def run_cli(argv=None):
    """`python -m llada_jax.train --config=FILE --workdir=DIR [--config.x.y=v ...]`: user
    mistakes exit 1 with one `error: ...` line; a run ended by SIGTERM/SIGINT (after
    saving a checkpoint) exits EXIT_PREEMPTED."""
    from absl import flags

    argv = list(sys.argv if argv is None else argv)
    with cli.user_errors():
        argv = cli.define_config_flag(argv)
    flags.DEFINE_string("workdir", None, "output directory; resumes from its latest checkpoint")
    flags.DEFINE_list("allow_change", [], "resuming: settings that may differ from run.json (e.g. "
                      "model.rope_theta); each change is recorded in run.json with its step")
    flags.mark_flags_as_required(["workdir"])

    def main(_):
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.WARNING)  # orbax logs every save at INFO
        init_distributed()
        with cli.user_errors(NonFiniteLossError):
            _, last = train_and_evaluate(flags.FLAGS.config, flags.FLAGS.workdir,
                                         allow_changes=flags.FLAGS.allow_change)
        raise SystemExit(exit_status(last))

    cli.run_absl(main, argv)
