"""VRPO on the sort task from an SFT workdir of configs/sort.py, on preference pairs
(llada_jax.rl.pairs JSONL: the correct answer over an incorrect one, e.g. written by
`python -m llada_jax.experiments.rl_miniature`).

    python -m llada_jax.rl --config=configs/vrpo_sort.py --workdir=workdirs/sort_vrpo \
        --config.rl.init_from=workdirs/sort --config.rl.pairs=pairs.jsonl
"""

from llada_jax.config import lock, sibling


def get_config():
    c = sibling(__file__, "sort.py")
    c.data.update(batch_size=32)  # pairs per step
    c.optim.update(lr=1e-4, schedule="constant", warmup_steps=0, weight_decay=0.0)
    c.train.update(steps=100, log_every=10, eval_every=0, num_samples=0)
    c.checkpoint.update(every=50, keep=2)
    c.rl.update(algorithm="vrpo", beta=0.1, vrpo_n=8)
    return lock(c)
