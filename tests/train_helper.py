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


def free_port() -> int:
    """A free TCP port on 127.0.0.1, for a multi-process run's coordinator."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


def finetune(cfg_model, base_params, *, rank, lr, steps, kind="sft", task="sort"):
    """(held-out loss before, after, final params) of `steps` steps on a synthetic task
    (fresh batches each step): full training (rank 0) or LoRA on every projection, of the
    family's model (`llada_jax.build`), on one device."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from llada_jax import build
    from llada_jax.data import tasks
    from llada_jax.model.adapters import lora
    from llada_jax.parallel import sharding
    from llada_jax.training import optimizer, step, train_state

    model = build(cfg_model.replace(lora=lora.LoRAConfig(rank=rank, alpha=2.0 * rank) if rank else lora.LoRAConfig()))
    optim = tiny_config(**{"optim.lr": lr, "optim.schedule": "constant", "optim.warmup_steps": 0,
                           "optim.weight_decay": 0.0}).optim
    tx, _ = optimizer.make_optimizer(optim, steps)
    mesh = sharding.make_mesh(dict(data=-1, fsdp=1, tensor=1), jax.devices()[:1])
    _, shardings = train_state.state_shardings(model, tx, mesh)
    base_params = jax.tree_util.tree_map(jnp.copy, base_params)  # the step donates its state
    if rank:
        # in the step's shardings, as the loop restores it: else the second step recompiles
        state = train_state.init_state(model, tx, mesh, 0, shardings, frozen=jax.device_put(base_params, shardings["frozen"]))
    else:
        state = train_state.init_state(model, tx, mesh, 0, shardings, params=base_params)
    st = step.Static(model, tx, kind, cfg_model.mask_token_id, 1e-3, 0.0, 1)
    t = tasks.make_task(task, n_items=6, n_values=64, vocab_size=cfg_model.vocab_size, seq_len=16)
    batches = tasks.TaskIterator(t, batch_size=16, seed=0, sft=kind == "sft")
    held_out = next(tasks.TaskIterator(t, batch_size=64, seed=1, sft=kind == "sft"))
    step_fn = step.compile_step(st, mesh, shardings, dict.fromkeys(held_out, 2))

    eval_loss = jax.jit(lambda p, k: step.eval_loss(p, held_out, k, st))

    def loss(state):
        full = train_state.full_params(state)
        return float(np.mean([eval_loss(full, jax.random.PRNGKey(k)) for k in range(4)]))

    before = loss(state)
    for _ in range(steps):
        state, _ = step_fn(state, next(batches))
    return before, loss(state), train_state.full_params(state)


def main():
    workdir, overrides = sys.argv[1], json.loads(sys.argv[2])
    flags = dict(a.lstrip("-").split("=") for a in sys.argv[3:])
    import jax

    from llada_jax.training import loop

    if "JAX_COORDINATOR_ADDRESS" in os.environ:
        loop.init_distributed()
    hooks = []
    for name, sig in (("kill-at", signal.SIGKILL), ("term-at", signal.SIGTERM)):
        if name in flags:
            at = int(flags[name])
            hooks.append(lambda done, state, m, at=at, sig=sig: done == at and os.kill(os.getpid(), sig))
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
