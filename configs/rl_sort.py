"""diffu-GRPO on the sort task, from an SFT workdir of configs/sort.py (the same model and
task fields: the reference is that SFT model).

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
    c.optim.update(lr=1e-4, schedule="constant", warmup_steps=0, weight_decay=0.0)
    c.train.update(steps=100, log_every=10, eval_every=50, num_samples=0)
    c.checkpoint.update(every=50, keep=2)
    gen = c.data.seq_len - (c.data.task_items + 1)  # the SFT answer region
    c.rl.update(algorithm="grpo", rewards="sort_exact", num_generations=8, num_iterations=2, p_mask_prompt=0.15,
                epsilon=0.2, beta=0.04, sampler_steps=gen, gen_length=gen, block_length=gen, temperature=1.0)
    return lock(c)
