#!/usr/bin/env bash
# Multi-node GPU training under SLURM: one process per node, each driving all the GPUs of its node.
#
#   sbatch --nodes=4 launch/slurm_gpu.sh --config=configs/llada_8b.py --workdir=/shared/runs/8b \
#       --config.data.path=/shared/data/prepared --config.mesh.data=4 --config.mesh.fsdp=8
#
# The arguments are those of `python -m llada_jax.train`. The coordinator is the first node of
# the job (port $PORT, default 12355); the process count and id come from SLURM_NTASKS and
# SLURM_PROCID, exported as JAX_NUM_PROCESSES / JAX_PROCESS_ID for llada_jax.parallel.distributed.init_distributed.
# Submit from the repository root (or set LLADA_ROOT). The workdir must be on a file system
# every node sees (all processes write their shards of each checkpoint).
# Edit the #SBATCH lines for your cluster (partition, account, time); sbatch options on the command
# line override them. Environment: PYTHON (default python3; activate your venv first, sbatch
# passes the environment on), PORT, DRY_RUN=1 (print the srun command instead of running it).
# Preemption and the time limit: SLURM sends SIGTERM to the training processes (5 minutes
# before the limit, --signal); they save a checkpoint and exit 75 (llada_jax.training.loop.EXIT_PREEMPTED),
# and this script then requeues the job (scontrol requeue), which resumes from that checkpoint.
#SBATCH --job-name=llada
#SBATCH --requeue
#SBATCH --signal=TERM@300
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=32
#SBATCH --exclusive
#SBATCH --time=48:00:00
#SBATCH --output=%x-%j.out
set -euo pipefail

: "${SLURM_JOB_NODELIST:?run this under SLURM: sbatch launch/slurm_gpu.sh --config=... --workdir=...}"
PYTHON=${PYTHON:-python3}
PORT=${PORT:-12355}
# sbatch runs a copy of this file, so the repository is where the job was submitted from.
ROOT=${LLADA_ROOT:-${SLURM_SUBMIT_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}}

first_node() {  # the first host name of a SLURM node list such as "gpu[003-006,010],cpu1"
  if command -v scontrol >/dev/null 2>&1; then
    scontrol show hostnames "$1" | head -n 1
  else
    local list=$1 head
    head=${list%%,*}
    if [[ $list == *"["* && ${list%%[*} != *","* ]]; then
      local prefix=${list%%[*} range=${list#*[}
      range=${range%%]*}; range=${range%%,*}
      head="${prefix}${range%%-*}"
    fi
    echo "$head"
  fi
}

export JAX_COORDINATOR_ADDRESS="$(first_node "$SLURM_JOB_NODELIST"):${PORT}"
export JAX_NUM_PROCESSES=${SLURM_NTASKS:-${SLURM_NNODES:-1}}
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
# XLA on GPU: let the allocator take most of the memory, overlap collectives with compute.
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92}
export XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_enable_latency_hiding_scheduler=true"

cmd=(srun --kill-on-bad-exit=1 --ntasks-per-node=1 --chdir="$ROOT"
     bash -c 'export JAX_PROCESS_ID=$SLURM_PROCID; exec "$@"' _ "$PYTHON" -m llada_jax.train "$@")
echo "slurm_gpu.sh: $JAX_NUM_PROCESSES processes, coordinator $JAX_COORDINATOR_ADDRESS" >&2
if [[ -n "${DRY_RUN:-}" ]]; then
  printf '%q ' "${cmd[@]}"; echo
  exit 0
fi
rc=0
"${cmd[@]}" || rc=$?
if [[ $rc -eq 75 ]]; then  # a checkpoint was saved on SIGTERM: run again from it
  echo "slurm_gpu.sh: preempted after saving a checkpoint; requeueing job ${SLURM_JOB_ID:-?}" >&2
  scontrol requeue "${SLURM_JOB_ID:?}"
fi
exit "$rc"
