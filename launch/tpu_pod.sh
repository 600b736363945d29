#!/usr/bin/env bash
# One training run over every host of a Cloud TPU pod slice: the same command on all workers, joined by
# jax.distributed (JAX detects the pod's hosts itself).
#
#   TPU_NAME=my-pod ZONE=us-central2-b bash launch/tpu_pod.sh --config=configs/default.py --workdir=/mnt/shared/runs/x
#
# Every worker needs this repository at ~/cnn_val with `pip install -e '.[tpu]'` done (e.g. the same command with
# --command='git clone ... && ...' first), and the workdir on a filesystem all hosts see (Filestore/NFS:
# gs:// run directories are not supported yet). Written from the Cloud TPU documentation; not run on a pod here.
set -euo pipefail
: "${TPU_NAME:?set TPU_NAME to the pod slice's name}" "${ZONE:?set ZONE to its zone}"
args=$(printf ' %q' "$@")
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=all \
  --command="cd ~/cnn_val && .venv/bin/python -m cnn_val.main --distributed$args"
