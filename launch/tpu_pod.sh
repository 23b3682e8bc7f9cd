#!/usr/bin/env bash
# Run the same training command on every host of a Cloud TPU VM pod slice, through gcloud.
# Run it from your workstation (or any machine with gcloud), not on the TPU VMs:
#
#   export TPU_NAME=my-v5p-256 ZONE=us-east5-a [PROJECT=my-project]
#   launch/tpu_pod.sh setup        # once: copy this repository to every host and install it
#   launch/tpu_pod.sh --config=configs/llada_8b.py --workdir=gs://my-bucket/runs/8b \
#       --config.data.path=/mnt/data/prepared
#
# Every host runs `python -m llada_jax.train <arguments>` in ~/llada-jax (REMOTE_DIR); JAX
# finds the other hosts of the slice itself (no coordinator to pass). The workdir must be
# shared by all hosts (a gs:// bucket or a mounted file system). Environment: TPU_NAME, ZONE
# (required), PROJECT, REMOTE_DIR, PYTHON (default python3 on the hosts), DRY_RUN=1 (print
# the gcloud command instead of running it). Stop a run with `launch/tpu_pod.sh stop`.
set -euo pipefail

: "${TPU_NAME:?set TPU_NAME (the TPU VM name) and ZONE}"
: "${ZONE:?set ZONE (e.g. us-east5-a)}"
REMOTE_DIR=${REMOTE_DIR:-llada-jax}
PYTHON=${PYTHON:-python3}
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

gcloud_all() {  # gcloud compute tpus tpu-vm ssh|scp ... on every worker
  local verb=$1; shift
  local cmd=(gcloud compute tpus tpu-vm "$verb")
  [[ $verb == ssh ]] && cmd+=("$TPU_NAME")
  cmd+=("$@" --zone="$ZONE" --worker=all ${PROJECT:+--project="$PROJECT"})
  if [[ -n "${DRY_RUN:-}" ]]; then
    printf '%q ' "${cmd[@]}"; echo
  else
    "${cmd[@]}"
  fi
}

case "${1:-}" in
  setup)
    tarball=$(mktemp --suffix=.tar.gz)
    tar -C "$ROOT" --exclude=.venv --exclude=.git --exclude=workdirs --exclude=runs -czf "$tarball" .
    gcloud_all scp "$tarball" "$TPU_NAME:llada-jax.tar.gz"
    install="$PYTHON -m pip install -q -e $REMOTE_DIR 'jax[tpu]==0.10.2'"
    gcloud_all ssh --command="mkdir -p $REMOTE_DIR && tar -C $REMOTE_DIR -xzf llada-jax.tar.gz && $install"
    rm -f "$tarball"
    ;;
  stop)
    gcloud_all ssh --command="pkill -INT -f 'llada_jax.train' || true"  # SIGINT: save a checkpoint and exit
    ;;
  "")
    sed -n '2,18p' "$0"; exit 2
    ;;
  *)
    args=$(printf '%q ' "$@")
    gcloud_all ssh --command="cd $REMOTE_DIR && $PYTHON -m llada_jax.train $args"
    ;;
esac
