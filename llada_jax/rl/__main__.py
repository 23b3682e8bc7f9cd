"""`python -m llada_jax.rl --config=configs/rl_sort.py --workdir=DIR --config.rl.init_from=SFT_DIR`:
diffu-GRPO or VRPO (config.rl.algorithm). A user's mistake exits 1 with one `error: ...`
line; a run stopped by SIGTERM/SIGINT (after saving a checkpoint) exits 75; rerun the
same command to resume."""

from __future__ import annotations

import sys

from llada_jax import cli


def main(argv=None):
    from absl import flags

    from llada_jax.training import loop
    from llada_jax.rl.loop import train_rl

    argv = list(sys.argv if argv is None else argv)
    with cli.user_errors():
        argv = cli.define_config_flag(argv, help_text="RL config file (configs/rl_sort.py, configs/vrpo_sort.py)")
    flags.DEFINE_string("workdir", None, "output directory; resumes from its latest checkpoint")
    flags.DEFINE_list("allow_change", [], "resuming: settings that may differ from run.json (e.g. "
                      "rl.num_generations); each change is recorded in run.json with its step")
    flags.mark_flags_as_required(["workdir"])

    def run(_):
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.WARNING)
        loop.init_distributed()
        with cli.user_errors(loop.NonFiniteLossError):
            _, last = train_rl(flags.FLAGS.config, flags.FLAGS.workdir, allow_changes=flags.FLAGS.allow_change)
        raise SystemExit(loop.exit_status(last))

    cli.run_absl(run, argv)


if __name__ == "__main__":
    main()
