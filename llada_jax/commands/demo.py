"""`make demo`: train a small masked diffusion LM to sort digits, then show the reverse
process, infilling and parallel decoding (`llada_jax.demo.run_demo`):

    llada-demo [--workdir=workdirs/demo] [--fast] [--config.train.steps=...]
    python -m llada_jax.demo ...   (the same command)"""

from __future__ import annotations

import os
import time

from llada_jax.commands import flags as flag_lib
from llada_jax.commands import startup


def define(fv):
    from absl import flags

    flags.DEFINE_string("workdir", os.path.join("workdirs", "demo"), "output directory", flag_values=fv)
    flags.DEFINE_bool("fast", False, "a few training steps and a small evaluation (tests)", flag_values=fv)


def main(argv=None):
    from llada_jax import demo

    with flag_lib.user_errors():
        F = flag_lib.parse(argv, define, doc=__doc__, config=True, default_config=demo.CONFIG,
                           config_help="demo config")
    from llada_jax.training import loop

    startup.start()
    config = demo.fast_overrides(F.config) if F.fast else F.config
    t0 = time.perf_counter()
    with flag_lib.user_errors(loop.NonFiniteLossError):
        demo.run_demo(config, F.workdir, **(dict(n_eval=16, repeats=1) if F.fast else {}))
    print(f"\ndone in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
