"""Train the task model of the speed-versus-quality table once, and write it as a
Hugging Face directory (config.json + model.safetensors, float32).

configs/cummax8.py: SFT on the running maximum of 8 digits; the answer region is padded with EOS to
64 or 128 tokens. Training cycles through answer regions of `--cycle` lengths (64 and
128, and the cheaper 16 that holds the same answer with less padding) so one model
serves both generation lengths of `benchmarks/fast_sampling.py`. The steps are
the project's (llada_jax.training.step); only the data alternation is this script's own. At the
end it prints the exact sampler's accuracy on held-out prompts, one JSON line per length.

    python benchmarks/train_task_model.py --out benchmarks/models/cummax8      # 390 s on the shared 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GEN_LENGTHS = (64, 128)


def emit(**fields):
    print(json.dumps(fields), flush=True)


def make_task(config, gen_length):
    from llada_jax.data import tasks

    d = config.data
    return tasks.make_task(d.task, n_items=d.task_items, n_values=d.task_values,
                           vocab_size=config.model.vocab_size, seq_len=d.task_items + 1 + gen_length)


def exact_accuracy(model, params, task, gen_length, n, block_length=32, seed=12345):
    """Exact-match accuracy of the exact sampler (steps = gen_length) on n held-out prompts."""
    from llada_jax.sampling import generate

    ids, _ = task.rows(np.random.default_rng(seed), n)
    out = generate(model, params, ids[:, : task.prompt_len], steps=gen_length, gen_length=gen_length,
                   block_length=block_length)
    return task.score(ids, np.asarray(out))


def train_model(config, steps, cycle, log=print, max_seconds=None, init=None):
    """(config, model, params) after `steps` SFT steps; batch k has an answer region of
    cycle[k % len(cycle)] tokens. `max_seconds`: stop early (the schedule is not shortened).
    `init`: a model directory to start from (a fresh optimizer and schedule)."""
    import jax

    from llada_jax.data import tasks
    from llada_jax.parallel import sharding
    from llada_jax.model import from_config
    from llada_jax.training import optimizer, step, train_state
    from llada_jax.model import build

    d = config.data
    mesh = sharding.make_mesh(config.mesh, jax.devices())
    mcfg = from_config.model_config(config, None)
    model = build(mcfg)
    tx, schedule = optimizer.make_optimizer(config.optim, steps)
    st = step.Static(model, tx, "sft", mcfg.mask_token_id, d.eps, 0.0, 1, schedule)
    _, shardings = train_state.state_shardings(model, tx, mesh)
    params = None
    if init:
        from llada_jax.interop import hf

        params = hf.load_pretrained(init, dtype="float32")[1]
    state = train_state.init_state(model, tx, mesh, config.train.seed, shardings, params=params)
    step_fn = step.compile_step(st, mesh, shardings, {"input_ids": 2, "prompt_mask": 2})
    its = {g: tasks.TaskIterator(make_task(config, g), batch_size=d.batch_size, seed=config.train.seed + g, sft=True)
           for g in set(cycle)}
    t0, losses = time.perf_counter(), []
    for at in range(1, steps + 1):
        it = its[cycle[at % len(cycle)]]
        state, m = step_fn(state, sharding.global_batch(next(it), mesh, d.batch_size))
        losses.append(float(m["loss"]))
        if at % config.train.log_every == 0 or at == steps:
            log(json.dumps(dict(figure="train", step=at, loss=round(float(np.mean(losses)), 4),
                                masked_accuracy=round(float(m["masked_accuracy"]), 4),
                                seconds=round(time.perf_counter() - t0, 1))))
            sys.stdout.flush()
            losses = []
        if max_seconds and time.perf_counter() - t0 > max_seconds:
            log(json.dumps(dict(figure="train_stopped", step=at, reason=f"max_seconds={max_seconds}")))
            break
    return mcfg, model, train_state.full_params(state)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=os.path.join(ROOT, "configs", "cummax8.py"))
    p.add_argument("--out", required=True, help="new directory for config.json + model.safetensors")
    p.add_argument("--steps", type=int, default=0, help="0: the config's train.steps")
    p.add_argument("--cycle", type=int, nargs="+", default=[16, 16, 64, 16, 16, 128], help="answer region per batch, cycled")
    p.add_argument("--max_minutes", type=float, default=0, help="stop training early after this long (0: never)")
    p.add_argument("--eval_rows", type=int, default=128)
    p.add_argument("--init", default="", help="continue from this model directory (new optimizer)")
    p.add_argument("--lr", type=float, default=0, help="0: the config's peak learning rate")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    args = p.parse_args(argv)
    from llada_jax.config import load_config_file
    from llada_jax.interop.export import check_target, save_pretrained

    try:
        check_target(args.out, args.overwrite)  # refuse before training, not after
    except ValueError as e:
        sys.exit(f"error: {e}")
    config = load_config_file(args.config)
    steps = args.steps or config.train.steps
    if args.lr:
        config.unlock()
        config.optim.lr = args.lr
    t = time.perf_counter()
    mcfg, model, params = train_model(config, steps, args.cycle, max_seconds=60 * args.max_minutes,
                                      init=args.init or None)
    emit(figure="train_total", steps=steps, seconds=round(time.perf_counter() - t, 1))
    save_pretrained(mcfg, params, args.out, dtype="float32", overwrite=args.overwrite)
    d = config.data  # what benchmarks/fast_sampling.py needs to rebuild the task
    with open(os.path.join(args.out, "task.json"), "w") as f:
        json.dump({"name": d.task, "n_items": d.task_items, "n_values": d.task_values}, f)
    for g in GEN_LENGTHS if args.eval_rows else ():
        acc, tok = exact_accuracy(model, params, make_task(config, g), g, args.eval_rows)
        emit(figure="exact_accuracy", gen_length=g, rows=args.eval_rows, accuracy=round(acc, 4),
             token_accuracy=round(tok, 4))


if __name__ == "__main__":
    main()
