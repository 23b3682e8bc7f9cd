#!/usr/bin/env bash
# Train on this host: one process that drives every local device, or N processes that
# form a multi-process JAX run on this host (to test the multi-host path without a cluster).
#
#   launch/local.sh --config=configs/tiny.py --workdir=runs/tiny [--config.x=...]
#   NPROC=2 JAX_PLATFORMS=cpu launch/local.sh --config=configs/tiny.py --workdir=runs/mp \
#       --config.data.source=synthetic --config.train.steps=20
#
# Arguments are those of `python -m llada_jax.train` (or, with MODULE=..., of another
# module such as llada_jax.generate). Environment:
#   NPROC=N          processes on this host (default 1). Process i gets JAX_PROCESS_ID=i,
#                    JAX_NUM_PROCESSES=N and the coordinator 127.0.0.1:PORT; CPU processes
#                    use gloo collectives. The run fails if any process fails.
#   PORT=P           coordinator port (default: a free one).
#   DEVICES_PER_PROCESS=K   CPU only: K virtual devices per process (XLA host device count).
#   GPUS_PER_PROCESS=K      GPU only: process i sees GPUs i*K .. i*K+K-1 (CUDA_VISIBLE_DEVICES).
#   PYTHON=...       interpreter (default: python3); MODULE=... (default: llada_jax.train).
#   LOG_DIR=DIR      with NPROC > 1, processes 1.. write DIR/process_<i>.log (default: they
#                    print to this terminal too; tqdm and metrics come from process 0 only).
set -euo pipefail

PYTHON=${PYTHON:-python3}
MODULE=${MODULE:-llada_jax.train}
NPROC=${NPROC:-1}
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

if [[ -n "${DEVICES_PER_PROCESS:-}" ]]; then
  export XLA_FLAGS="${XLA_FLAGS:-} --xla_force_host_platform_device_count=${DEVICES_PER_PROCESS}"
fi

if [[ "$NPROC" -le 1 ]]; then
  exec "$PYTHON" -m "$MODULE" "$@"
fi

PORT=${PORT:-$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
export JAX_COORDINATOR_ADDRESS="127.0.0.1:${PORT}" JAX_NUM_PROCESSES="$NPROC" LLADA_CPU_COLLECTIVES=gloo
echo "launch/local.sh: $NPROC processes, coordinator $JAX_COORDINATOR_ADDRESS" >&2

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
}
trap 'cleanup; exit 130' INT TERM

for ((i = 0; i < NPROC; i++)); do
  (
    export JAX_PROCESS_ID=$i
    if [[ -n "${GPUS_PER_PROCESS:-}" ]]; then
      export CUDA_VISIBLE_DEVICES=$(seq -s, $((i * GPUS_PER_PROCESS)) $((i * GPUS_PER_PROCESS + GPUS_PER_PROCESS - 1)))
    fi
    if [[ $i -gt 0 && -n "${LOG_DIR:-}" ]]; then
      mkdir -p "$LOG_DIR"
      exec "$PYTHON" -m "$MODULE" "$@" >"$LOG_DIR/process_$i.log" 2>&1
    fi
    exec "$PYTHON" -m "$MODULE" "$@"
  ) &
  pids+=($!)
done

status=0
for ((n = 0; n < NPROC; n++)); do
  if ! wait -n; then  # the first process to fail ends the run: the others would wait on it
    status=1
    echo "launch/local.sh: a process failed; stopping the others" >&2
    cleanup
  fi
done
exit $status
