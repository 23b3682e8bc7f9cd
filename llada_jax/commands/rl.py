"""diffu-GRPO or VRPO (config.rl.algorithm, `rl.loop.train_rl`):

    llada-rl --config=configs/rl_sort.py --workdir=DIR --config.rl.init_from=SFT_DIR
    python -m llada_jax.rl ...   (the same command)

A user's mistake exits 1 with one `error: ...` line; a run stopped by SIGTERM/SIGINT
(after saving a checkpoint) exits 75: rerun the same command to resume."""

from __future__ import annotations

from llada_jax.commands import train


def main(argv=None):
    from llada_jax.rl.loop import train_rl

    train.main(argv, config_help="RL config file (configs/rl_sort.py, configs/vrpo_sort.py)", train=train_rl)


if __name__ == "__main__":
    main()
