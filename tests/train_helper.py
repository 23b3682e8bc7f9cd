"""Run a tiny training in a subprocess for the tests: `python tests/train_helper.py
WORKDIR JSON_OVERRIDES [--kill-at=N | --term-at=N]`.

The overrides are {"section.field": value} applied to `tests/train_helper.tiny_config()`.
--kill-at=N sends SIGKILL to this process after step N, --term-at=N sends SIGTERM
(the loop then saves and exits). Multi-process runs set JAX_COORDINATOR_ADDRESS,
JAX_NUM_PROCESSES and JAX_PROCESS_ID; the final step and loss are printed as JSON
and the final params saved to WORKDIR/params_<process>.npz.
"""

import json
import os
import signal
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def one_device_xla_flags():
    """The suite's XLA_FLAGS (tests/conftest.py) without its 8 virtual devices: a subprocess
    then runs on one CPU device, as a user's CPU run, but keeps the suite's cheap compiles."""
    return " ".join(f for f in os.environ.get("XLA_FLAGS", "").split()
                    if not f.startswith("--xla_force_host_platform_device_count"))


def tiny_config(**overrides):
    from configs.tiny import get_config

    c = get_config()
    c.model.update(d_model=32, n_heads=4, n_kv_heads=2, n_layers=2, mlp_hidden_size=64, vocab_size=128,
                   embedding_size=128, max_sequence_length=64)
    c.data.update(source="synthetic", seq_len=32, batch_size=8, random_length_prob=0.0)
    c.train.update(steps=6, log_every=1, eval_every=0, num_samples=0, peak_flops=1e9)
    c.optim.update(warmup_steps=2, decay_steps=2)
    c.checkpoint.update(every=2, keep=3, async_save=True)
    c.mesh.update(data=-1, fsdp=1, tensor=1)
    for key, value in overrides.items():
        section, field = key.split(".")
        setattr(getattr(c, section), field, value)
    return c


def main():
    workdir, overrides = sys.argv[1], json.loads(sys.argv[2])
    flags = dict(a.lstrip("-").split("=") for a in sys.argv[3:])
    import jax

    from llada_jax.training import loop

    if "JAX_COORDINATOR_ADDRESS" in os.environ:
        from llada_jax.parallel.distributed import init_distributed

        init_distributed()
    hooks = []
    for name, sig in (("kill-at", signal.SIGKILL), ("term-at", signal.SIGTERM)):
        if name in flags:
            at = int(flags[name])
            hooks.append(lambda step, state, m, at=at, sig=sig: step == at and os.kill(os.getpid(), sig))
    state, last = loop.train_and_evaluate(tiny_config(**overrides), workdir, hooks=hooks)
    import numpy as np
    from jax.experimental import multihost_utils

    params = multihost_utils.process_allgather(state["params"], tiled=True)  # every process: full arrays

    flat = {jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_leaves_with_path(params)}
    np.savez(os.path.join(workdir, f"params_{jax.process_index()}.npz"), **flat)
    print("RESULT " + json.dumps({"step": int(np.asarray(state["step"].addressable_data(0))),
                                  "loss": last.get("loss")}), flush=True)
    sys.exit(loop.exit_status(last))  # as `python -m llada_jax.train` exits


if __name__ == "__main__":
    main()
