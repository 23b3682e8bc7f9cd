"""`make demo`: train a small masked diffusion LM to sort digits (configs/demo.py, about
2 minutes on a 2-core CPU), then show what makes it a diffusion model:

1. training with the library's loop (one progress bar), its throughput and MFU;
2. the reverse process step by step: every masked position is predicted at each model
   call and the most confident predictions are kept, in no fixed order;
3. infilling a span in the middle of a sequence, conditioned on both sides;
4. parallel decoding: exact-match accuracy on fresh lists with one token per model call
   and with the confidence-threshold rule (several tokens per call), and its speedup.

    python -m llada_jax.demo [--workdir=workdirs/demo] [--fast] [--config.train.steps=...]

A second run in the same workdir resumes its finished checkpoint and only samples.
`--fast` (tests): a few training steps and a small evaluation; the output is the same
shape but the model has learnt little.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(ROOT, "configs", "demo.py")
MASK, EOS, SEP = "_", ".", ">"


def render(ids, task, new=()):
    """A sequence of the sort task as text, one 3-character cell per token: digits,
    `>` (separator), `.` (EOS), `_` (mask); tokens in `new` are bracketed."""
    cells = []
    for j, t in enumerate(int(i) for i in ids):
        c = MASK if t == task.mask else EOS if t == task.eos else SEP if t == task.sep else str(t)
        cells.append(f"[{c}]" if j in new else f" {c} ")
    return "".join(cells)


def reverse_process_lines(ids, reveal_step, calls, task):
    """One line per model call: the sequence after that call, its reveals bracketed.
    `reveal_step` (L,) from `sampling.generate(..., return_stats=True)`: revealed tokens
    never change, so the state after call c is every token revealed at a call <= c."""
    ids, when = np.asarray(ids), np.asarray(reveal_step)
    lines = [f"  start   {render(np.where(when >= 0, task.mask, ids), task)}"]
    for c in range(calls):
        shown = np.where((when >= 0) & (when > c), task.mask, ids)
        lines.append(f"  call {c + 1:<2} {render(shown, task, set(np.flatnonzero(when == c)))}")
    return lines


def _timed(fn, repeats=3):
    """Best wall time of `fn()` (its result blocked on) after one warm-up call that compiles."""
    import jax

    out = jax.block_until_ready(fn())
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - t)
    return out, best


def show_training(workdir, mcfg, seq_len, wall_s, cpu_s, say):
    """Loss, throughput and MFU from the run's metrics.jsonl (the loop's own accounting:
    model FLOPs per step over a matmul peak it measures at start-up)."""
    from llada_jax.model import flops
    from llada_jax.training import metrics

    rows = metrics.read_jsonl(workdir)
    timed = [r for r in rows if "mfu" in r]
    if not rows:
        return
    say(f"  loss {rows[0]['loss']:.3f} (step {rows[0]['step']}) -> {rows[-1]['loss']:.4f} "
        f"(step {rows[-1]['step']}), masked-token accuracy {rows[-1]['masked_accuracy']:.3f}")
    if timed:
        mfu = float(np.mean([r["mfu"] for r in timed]))
        tps = float(np.mean([r["tokens_per_s"] for r in timed]))
        gflops = tps * flops.train_flops_per_token(mcfg, seq_len) / 1e9
        say(f"  {tps:,.0f} tokens/s, {1e3 * float(np.mean([r['step_time_s'] for r in timed])):.0f} ms/step, "
            f"{gflops:.1f} GFLOP/s: MFU {100 * mfu:.1f}% of a matmul peak measured at start-up")
    if wall_s is not None:
        say(f"  {wall_s:.0f} s wall, {cpu_s:.0f} s CPU for this run ({cpu_s / max(wall_s, 1e-9):.1f} cores busy)")


def run_demo(config, workdir, *, n_eval=256, repeats=3, say=print):
    """Train (or resume) into `workdir`, then print the four sections (through `say`).
    Returns the figures: accuracy, model calls and seconds of both samplers, speedup."""
    from llada_jax import sampling
    from llada_jax.data import tasks
    from llada_jax.model import from_config
    from llada_jax.training import loop
    from llada_jax.training import train_state
    from llada_jax.model import build

    d = config.data
    steps = config.train.steps
    say(f"LLaDA-JAX demo: a masked diffusion LM learns to sort {d.task_items} digits\n")
    say(f"[1/4] training {os.path.relpath(CONFIG)} into {workdir}: {steps} steps of {d.batch_size} "
        f"sequences of {d.seq_len} tokens")
    t0, c0 = time.perf_counter(), time.process_time()
    state, last = loop.train_and_evaluate(config, workdir)
    trained = "step_time_s" in last
    mcfg = from_config.model_config(config, None)
    show_training(workdir, mcfg, d.seq_len, time.perf_counter() - t0 if trained else None,
                  time.process_time() - c0, say)

    model, params = build(mcfg), train_state.full_params(state)
    task = tasks.make_task("sort", n_items=d.task_items, n_values=d.task_values, vocab_size=mcfg.vocab_size,
                           seq_len=d.seq_len)
    p, g = task.prompt_len, d.seq_len - task.prompt_len
    ids, _ = task.rows(np.random.default_rng(2026), n_eval)  # fresh lists (training draws seed [0, k])
    gen = dict(gen_length=g, block_length=g)  # the model's mask and EOS ids

    # Both samplers on the whole batch first (one compile each); row 0 is shown step by step.
    fig, runs = {}, {}
    for name, thr in (("exact", None), ("threshold", 0.9)):
        (out, st), secs = _timed(lambda thr=thr: sampling.generate(
            model, params, ids[:, :p], steps=g, threshold=thr, return_stats=True, **gen), repeats)
        runs[name] = np.asarray(out), st
        acc, tok_acc = task.score(ids, runs[name][0])
        fig[name] = dict(accuracy=acc, token_accuracy=tok_acc, model_calls=st["model_calls"], seconds=secs)

    say("\n[2/4] the reverse process: the answer starts all masked; each model call predicts every "
        "masked\n      position and keeps the most confident one (low-confidence remasking), in any order")
    out, st = runs["exact"]
    say("\n".join(reverse_process_lines(out[0], st["reveal_step"][0], st["model_calls"], task)))
    out, st = runs["threshold"]
    row_calls = int(st["reveal_step"][0].max()) + 1  # the batch runs until its slowest row is done
    say(f"  the same with the threshold rule (keep every prediction above 0.9): "
        f"{row_calls} model call{'s' if row_calls > 1 else ''}")
    say("\n".join(reverse_process_lines(out[0], st["reveal_step"][0], row_calls, task)[1:]))

    say("\n[3/4] infill: mask a span in the middle; the model fills it from both sides")
    span = slice(p + g // 2 - 2, p + g // 2 + 1)
    holes = ids[1:2].copy()
    holes[:, span] = mcfg.mask_token_id
    filled = np.asarray(sampling.generate(model, params, holes, steps=span.stop - span.start, gen_length=0))
    say(f"  masked  {render(holes[0], task)}")
    say(f"  filled  {render(filled[0], task, set(range(span.start, span.stop)))}"
        f"   {'correct' if (filled == ids[1:2]).all() else 'wrong'}")

    say(f"\n[4/4] parallel decoding: {n_eval} fresh lists, exact-match accuracy of the sorted answer")
    for name, label in (("exact", "one token per call"), ("threshold", "threshold 0.9")):
        f = fig[name]
        say(f"  {label:<20} accuracy {100 * f['accuracy']:5.1f}% (tokens {100 * f['token_accuracy']:5.1f}%), "
            f"{f['model_calls']:>2} model calls, {1e3 * f['seconds']:6.1f} ms for the batch")
    fig["speedup"] = fig["exact"]["seconds"] / fig["threshold"]["seconds"]
    say(f"  threshold rule: {fig['speedup']:.1f}x faster, "
        f"{fig['exact']['model_calls'] / max(1, fig['threshold']['model_calls']):.1f}x fewer model calls, "
        f"accuracy {100 * (fig['threshold']['accuracy'] - fig['exact']['accuracy']):+.1f} points")

    example = ",".join(str(int(i)) for i in ids[0, :p])
    say(f"\nwritten to {workdir}/: checkpoints/ (orbax), metrics.jsonl, tensorboard/, run.json")
    say("next (from the repository root):")
    for hint in next_commands(workdir, example, g):
        say(f"  {hint}")
    return fig


def interpreter() -> str:
    """This Python as a command: relative when it lies under the working directory
    (`.venv/bin/python` after `make demo`), so the hints run without an activated venv."""
    exe = sys.executable
    rel = os.path.relpath(exe)
    return rel if not rel.startswith("..") else exe


def next_commands(workdir: str, example: str, gen_length: int) -> list[str]:
    """The commands the demo suggests, runnable as printed from the repository root."""
    py = interpreter()
    return [f"{py} -m llada_jax.generate --workdir={workdir} --prompt_ids={example} --gen_length={gen_length} "
            "--show_ids",
            f"make tensorboard LOGDIR={os.path.join(workdir, 'tensorboard')}   # installs the tensorboard extra",
            f"{py} -m llada_jax.train --config=configs/tiny.py --workdir=workdirs/tiny   # text (README)"]


def fast_overrides(config):
    """--fast: a few steps and no warm-up, for tests of the demo's output."""
    config.unlock()
    config.train.steps, config.optim.warmup_steps, config.data.batch_size = 8, 2, 16
    config.lock()
    return config


def main(argv=None):
    from absl import flags

    from llada_jax import cli

    with cli.user_errors():
        argv = cli.define_config_flag(list(sys.argv if argv is None else argv), CONFIG, "demo config")
    flags.DEFINE_string("workdir", os.path.join("workdirs", "demo"), "output directory")
    flags.DEFINE_bool("fast", False, "a few training steps and a small evaluation (tests)")

    def run(_):
        from absl import logging as absl_logging

        from llada_jax.training import loop

        absl_logging.set_verbosity(absl_logging.WARNING)  # orbax logs every save at INFO
        F = flags.FLAGS
        config = fast_overrides(F.config) if F.fast else F.config
        t0 = time.perf_counter()
        with cli.user_errors(loop.NonFiniteLossError):
            run_demo(config, F.workdir, **(dict(n_eval=16, repeats=1) if F.fast else {}))
        print(f"\ndone in {time.perf_counter() - t0:.0f} s")

    cli.run_absl(run, argv)


if __name__ == "__main__":
    main()
