"""The reversal curse in miniature (`python -m llada_jax.experiments.reversal`).

`--config=configs/experiments/reversal.py` is the full run (about 10 CPU minutes on
2 cores); `--config=configs/experiments/reversal.py:reduced` the seconds-long CI check.
"""

import ml_collections

from llada_jax.config import experiment_mode


def get_config(mode: str = "full"):
    full = experiment_mode("reversal", mode)
    c = ml_collections.ConfigDict()
    c.mode = mode
    # Set A: facts written only forward ("<A> is the parent of <B>."); set B: written
    # both ways (also "<B> is the child of <A>."), so the inverse relation can be learned.
    c.data = ml_collections.ConfigDict(dict(num_a=80 if full else 12, num_b=80 if full else 12,
                                            syllables_per_name=2, seed=0))
    c.model = ml_collections.ConfigDict(dict(d_model=128 if full else 48, n_layers=3 if full else 2,
                                             n_heads=4, mlp_hidden_size=384 if full else 128))
    # Both models: the same size, data, steps, optimizer and initial parameters.
    c.train = ml_collections.ConfigDict(dict(steps=3500 if full else 60, batch_size=64 if full else 16,
                                             lr=3e-3, warmup_steps=100 if full else 10, seed=0))
    c.lock()
    return c
