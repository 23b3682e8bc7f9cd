"""VRPO on the sort task from an SFT workdir of configs/sort.py, on preference pairs
(llada_jax.rl.pairs JSONL: the SFT model's correct answer over its incorrect one, written by
`python -m llada_jax.rl.pairs` from this config's task, rewards and sampling options).

    python -m llada_jax.rl.pairs --config=configs/vrpo_sort.py --policy=workdirs/sort --out=pairs.jsonl
    python -m llada_jax.rl --config=configs/vrpo_sort.py --workdir=workdirs/sort_vrpo \
        --config.rl.init_from=workdirs/sort --config.rl.pairs=pairs.jsonl
"""

import importlib.util
import os

from llada_jax.config import lock


def get_config():
    spec = importlib.util.spec_from_file_location("_sort", os.path.join(os.path.dirname(__file__), "sort.py"))
    sort = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sort)
    c = sort.get_config().copy_and_resolve_references()
    c.data.update(batch_size=32)  # pairs per step
    c.optim.update(lr=1e-4, schedule="constant", warmup_steps=0, weight_decay=0.0)
    c.train.update(steps=100, log_every=10, eval_every=0, num_samples=0)
    c.checkpoint.update(every=50, keep=2)
    gen = c.data.seq_len - (c.data.task_items + 1)  # the SFT answer region: the pairs' answers
    # the pairs' samples: 8 per prompt at temperature 1, so a prompt's samples differ
    c.rl.update(algorithm="vrpo", beta=0.1, vrpo_n=8, rewards="sort_exact", num_generations=8,
                sampler_steps=gen, gen_length=gen, block_length=gen, temperature=1.0)
    return lock(c)
