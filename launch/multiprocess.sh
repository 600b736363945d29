#!/usr/bin/env bash
# One training run over N processes on this machine (jax.distributed; CPU collectives through gloo), e.g.
#
#   bash launch/multiprocess.sh 2 --config=configs/default.py --workdir=runs/mp --config.cpu_devices=1
#
# Starts `python -m cnn_val.main --coordinator_address=localhost:PORT --num_processes=N --process_id=i FLAGS...`
# for i in 0..N-1 (PORT: $CNN_VAL_PORT or a free one). When one process fails or is killed, the others are
# stopped (SIGTERM: they stop at a step boundary); the same command again resumes the run from its latest
# checkpoint. Exit status: the first failing process's, else 0.
set -uo pipefail
if [[ $# -lt 1 || ! "$1" =~ ^[1-9][0-9]*$ ]]; then
  echo "Usage: bash launch/multiprocess.sh N --config=CONFIG --workdir=DIR [FLAGS...]" >&2
  exit 2
fi
n=$1; shift
python=${PYTHON:-$(dirname "$0")/../.venv/bin/python}
[[ -x "$python" ]] || python=python3
port=${CNN_VAL_PORT:-$("$python" -c 'import socket; s = socket.socket(); s.bind(("localhost", 0)); print(s.getsockname()[1])')}
pids=()
for ((i = 0; i < n; i++)); do
  "$python" -m cnn_val.main --coordinator_address="localhost:$port" --num_processes="$n" --process_id="$i" "$@" &
  pids+=($!)
done
# SIGTERM first (a process stops at its next step boundary); one blocked in a collective with a dead peer gets
# SIGKILL after a grace period, $CNN_VAL_STOP_GRACE_S seconds (20 by default; its run resumes from the latest
# checkpoint all the same).
stop_all() {
  kill -TERM "${pids[@]}" 2>/dev/null
  (sleep "${CNN_VAL_STOP_GRACE_S:-20}"; kill -KILL "${pids[@]}" 2>/dev/null) &
}
trap 'stop_all; wait; exit 130' INT TERM
rc=0
for ((left = n; left > 0; left--)); do
  wait -n "${pids[@]}"
  status=$?
  if [[ $status -ne 0 && $rc -eq 0 ]]; then
    rc=$status
    stop_all
  fi
done
exit $rc
