"""`python -m llada_jax.rl.pairs`: VRPO preference pairs from a policy's own scored samples.

    python -m llada_jax.rl.pairs --config=configs/vrpo_sort.py --policy=runs/sort --out=pairs.jsonl
    python -m llada_jax.rl --config=configs/vrpo_sort.py --workdir=runs/sort_vrpo \
        --config.rl.init_from=runs/sort --config.rl.pairs=pairs.jsonl

The config is the VRPO run's: its `data` section names the checkable task the prompts are
drawn from (`data.task`, `task_items`, `task_values`, `seq_len`), its `rl` section the
rewards (`rl.rewards`), the samples per prompt (`rl.num_generations`) and the sampling
options (`rl.gen_length`, `sampler_steps`, `block_length`, `temperature`, `remasking`,
`threshold`, `cache`). The policy is a training workdir (run.json + checkpoints/, its
latest checkpoint) or a Hugging Face folder (config.json + safetensors); its model gives
the vocabulary and the special ids, which must be the task's.

`--num_prompts` fresh prompts (drawn from `--seed`) each get G samples through the serving
engine (`rl.rollout.rollout`, each sample its own seed), scored by the summed rewards; a
prompt whose samples differ in reward gives one pair, its best sample over its worst
(`rl.pairs.from_rewards`), written with `rl.pairs.write`. The output file is never
overwritten; no file is written when no prompt gives a pair. A user's mistake exits 1 with
one `error: ...` line.
"""

from __future__ import annotations

import os
import sys

import numpy as np

from llada_jax import cli


def load_policy(path: str):
    """(LLaDAConfig, params) of a training workdir (run.json) or a Hugging Face folder
    (config.json); ValueError naming --policy otherwise."""
    if os.path.isfile(os.path.join(path, "run.json")):
        from llada_jax.checkpoint.load import load_workdir

        w = load_workdir(path, tokenizer=False)
        return w.config, w.params
    if os.path.isfile(os.path.join(path, "config.json")):
        from llada_jax.interop.import_hf import load_pretrained

        return load_pretrained(path)
    raise ValueError(f"--policy={path!r}: expected a training workdir (run.json) or a Hugging Face folder "
                     "(config.json)")


def task_of(config, mcfg):
    """The checkable task of the config's data section, in the policy's vocabulary;
    ValueError when the policy's EOS or mask id is not the task's."""
    from llada_jax.data import tasks

    d = config.data
    task = tasks.make_task(d.task, n_items=d.task_items, n_values=min(d.task_values, mcfg.vocab_size - 2),
                           vocab_size=mcfg.vocab_size, seq_len=d.seq_len)
    for name, want in (("eos_token_id", getattr(task, "eos", None)), ("mask_token_id", getattr(task, "mask", None))):
        if want is not None and getattr(mcfg, name) != want:
            raise ValueError(f"--policy: the model's {name}={getattr(mcfg, name)} but the task "
                             f"config.data.task={d.task!r} uses {want}; give the policy trained on this task")
    return task


def sample_pairs(model, params, task, rl_cfg, *, num_prompts: int, seed: int, slots: int | None = None):
    """(prompts (N, P), chosen (N, C), rejected (N, C), rewards (num_prompts, G)) from
    G = rl.num_generations samples of each of `num_prompts` prompts of `task`: a pure
    function of (params, task, rl_cfg, num_prompts, seed)."""
    import jax

    from llada_jax.rl import pairs as pairs_lib
    from llada_jax.rl import rewards as rewards_lib
    from llada_jax.rl import rollout as rollout_lib

    names = rewards_lib.parse(rl_cfg.rewards)
    g = rl_cfg.num_generations
    sampling = rollout_lib.sampling_params(rl_cfg)
    prompts = task.rows(np.random.default_rng([seed, 5]), num_prompts)[0][:, :task.prompt_len]
    seqs = rollout_lib.rollout(model, params, prompts, num_generations=g, rng=jax.random.key(seed),
                               sampling=sampling, slots=slots,
                               block_width=model.config.block_size or sampling.block_length)
    completions = seqs[:, task.prompt_len:]
    r = rewards_lib.total_reward(names, np.repeat(prompts, g, 0), completions, task).reshape(num_prompts, g)
    p, w, l = pairs_lib.from_rewards(prompts, completions.reshape(num_prompts, g, -1), r,
                                     exclude_id=model.config.mask_token_id)
    return p, w, l, r


def check_args(config, out: str, num_prompts: int):
    """ValueError for what can be checked before the policy loads: the output path, the
    prompt count, the rewards and the sampling options."""
    from llada_jax.config import rules_rl

    if os.path.exists(out):
        raise ValueError(f"--out={out!r} exists; give a new path (it is never overwritten)")
    if not os.path.isdir(os.path.dirname(out) or "."):
        raise ValueError(f"--out={out!r}: no such directory {os.path.dirname(out)!r}")
    if num_prompts < 1:
        raise ValueError(f"--num_prompts={num_prompts}: expected >= 1")
    rules_rl.pair_sampling(config)


def main(argv=None):
    from absl import flags

    argv = list(sys.argv if argv is None else argv)
    with cli.user_errors():
        argv = cli.define_config_flag(argv, help_text="the VRPO run's config (configs/vrpo_sort.py): task, "
                                      "rewards, samples per prompt, sampling options")
    flags.DEFINE_string("policy", None, "the model to sample: a training workdir or a Hugging Face folder")
    flags.DEFINE_string("out", None, "the pairs JSONL to write (must not exist)")
    flags.DEFINE_integer("num_prompts", 256, "fresh prompts of the task; each gives at most one pair")
    flags.DEFINE_integer("seed", 0, "draws the prompts and the samples")
    flags.DEFINE_integer("batch_size", None, "engine rows per step (default: all samples at once)")
    flags.mark_flags_as_required(["policy", "out"])
    F = flags.FLAGS

    def run(_):
        from absl import logging as absl_logging

        from llada_jax.model import build
        from llada_jax.rl import pairs as pairs_lib

        absl_logging.set_verbosity(absl_logging.WARNING)
        config = F.config
        check_args(config, F.out, F.num_prompts)
        mcfg, params = load_policy(F.policy)
        task = task_of(config, mcfg)
        p, w, l, r = sample_pairs(build(mcfg), params, task, config.rl, num_prompts=F.num_prompts, seed=F.seed,
                                  slots=F.batch_size)
        g = config.rl.num_generations
        if not len(p):
            raise ValueError(f"no pairs: the {g} samples of every prompt got the same reward (mean {r.mean():.3g}); "
                             "raise --config.rl.temperature or --config.rl.num_generations, or use another policy")
        pairs_lib.write(F.out, p, w, l)
        print(f"{len(p)} pairs from {F.num_prompts} prompts ({g} samples each, rewards {config.rl.rewards}: "
              f"mean {r.mean():.3f}) written to {F.out}")

    cli.run_absl(run, argv)
