"""diffu-GRPO on the sort task, from an SFT workdir of configs/sort.py (the same model and
task fields: the reference is that SFT model). With these settings the greedy exact match
on 512 held-out prompts goes from the SFT start's 20.3% to 31.6% in 300 steps (about 7
minutes on a 2-core CPU; the README's RL section).

    python -m llada_jax.train --config=configs/sort.py --workdir=workdirs/sort
    python -m llada_jax.rl --config=configs/rl_sort.py --workdir=workdirs/sort_grpo \
        --config.rl.init_from=workdirs/sort
"""

import os

from llada_jax.config import load_config_file, lock


def get_config():
    sort = load_config_file(os.path.join(os.path.dirname(__file__), "sort.py"))
    c = sort.copy_and_resolve_references()  # unlocked copy of the SFT config
    c.data.update(batch_size=16)  # prompts per rollout batch
    c.optim.update(lr=5e-5, schedule="constant", warmup_steps=0, weight_decay=0.0)
    c.train.update(steps=300, log_every=25, eval_every=50, num_samples=0)
    c.checkpoint.update(every=100, keep=2)
    gen = c.data.seq_len - (c.data.task_items + 1)  # the SFT answer region
    # 8 samples per prompt at temperature 1, 8 updates per rollout batch, no KL term (beta 0):
    # the settings of llada_jax.experiments.rl_miniature, whose gains they reproduce
    c.rl.update(algorithm="grpo", rewards="sort_exact", num_generations=8, num_iterations=8, p_mask_prompt=0.15,
                epsilon=0.2, beta=0.0, sampler_steps=gen, gen_length=gen, block_length=gen, temperature=1.0,
                eval_prompts=512)
    return lock(c)
