"""Joining a multi-process JAX run."""

from __future__ import annotations

import os

import jax


def init_distributed():
    """Join a multi-process run when the environment describes one: JAX_COORDINATOR_ADDRESS
    with JAX_NUM_PROCESSES and JAX_PROCESS_ID, or a cluster JAX detects itself (SLURM,
    Open MPI, Cloud TPU). CPU processes use gloo collectives. JAX's preemption service
    starts with it (`training.preemption`: every process stops at the same step)."""
    env = os.environ
    if env.get("JAX_PLATFORMS", "") == "cpu" or env.get("LLADA_CPU_COLLECTIVES") == "gloo":
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if "JAX_COORDINATOR_ADDRESS" in env:
        jax.distributed.initialize(env["JAX_COORDINATOR_ADDRESS"], int(env["JAX_NUM_PROCESSES"]),
                                   int(env["JAX_PROCESS_ID"]))
    elif any(k in env for k in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE", "TPU_WORKER_HOSTNAMES")):
        jax.distributed.initialize()
