"""`make demo`: train configs/tiny.py on the embedded corpus (the Python standard library),
then sample from it and print the tensorboard command.

    python -m llada_jax.demo [--workdir=DIR] [--config.x=...]

Default workdir: ./workdirs/demo (a second run resumes there and only samples).
"""

from __future__ import annotations

import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv=None):
    from absl import flags

    from llada_jax import cli

    with cli.user_errors():
        argv = cli.define_config_flag(list(sys.argv if argv is None else argv),
                                      os.path.join(ROOT, "configs", "tiny.py"), "experiment config")
    flags.DEFINE_string("workdir", os.path.join("workdirs", "demo"), "output directory")
    flags.DEFINE_string("prompt", "def ", "prompt to continue after training")

    def run(_):
        from llada_jax import generate
        from llada_jax.training import loop, metrics

        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.WARNING)  # orbax logs every save at INFO
        F = flags.FLAGS
        t0 = time.time()
        print(f"training {os.path.relpath(os.path.join(ROOT, 'configs', 'tiny.py'))} into {F.workdir} ...",
              flush=True)
        with cli.user_errors(loop.NonFiniteLossError):
            loop.train_and_evaluate(F.config, F.workdir)
        rows = metrics.read_jsonl(F.workdir)
        if rows:
            print(f"\ntrain loss: {rows[0]['loss']:.3f} (step {rows[0]['step']}) -> "
                  f"{rows[-1]['loss']:.3f} (step {rows[-1]['step']})")
        ev = metrics.read_jsonl(F.workdir, "eval")
        if ev:
            print(f"eval loss {ev[-1]['loss']:.3f} = {ev[-1]['bits_per_token']:.3f} bits/token")
        model, params, tok, step = generate.load(F.workdir)
        ids = generate.encode_prompt(F.prompt, None, tok, model.config.mask_token_id)
        _, text = generate.sample(model, params, ids, tokenizer=tok, gen_length=48, steps=48, block_length=16)
        print(f"\nsample from step {step}, prompt {F.prompt!r}:\n{F.prompt}{text}")
        infill = "import <mask:3>\n"
        ids = generate.encode_prompt(infill, None, tok, model.config.mask_token_id)
        _, text = generate.sample(model, params, ids, tokenizer=tok, gen_length=0, steps=3)
        print(f"\ninfill {infill!r}: {text!r}")
        print(f"\ndone in {time.time() - t0:.0f} s. Metrics: {os.path.join(F.workdir, 'metrics.jsonl')}")
        print(f"tensorboard --logdir {os.path.join(F.workdir, 'tensorboard')}")

    cli.run_absl(run, argv)


if __name__ == "__main__":
    main()
