#!/usr/bin/env bash
# Runs one config over several seeds, one run directory each (runs/NAME/seed_K), one after another.
# Extra arguments are passed to cnn_val.main as config overrides. A failed seed does not stop the
# others; the script then exits 1 naming them.
#
#   launch/seeds.sh configs/default.py runs/default_seeds 3 --config.num_epochs=10
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "usage: $0 CONFIG_FILE OUTPUT_DIR NUM_SEEDS [--config.field=value ...]" >&2
  exit 2
fi
config=$1 out=$2 seeds=$3
shift 3
python=${PYTHON:-python3}
[ -x .venv/bin/python ] && python=${PYTHON:-.venv/bin/python}
failed=()
for ((seed = 0; seed < seeds; seed++)); do  # a failed run (e.g. stopped on NaN) does not stop the others
  "$python" -m cnn_val.main --config="$config" --workdir="$out/seed_$seed" --config.seed="$seed" "$@" \
    || failed+=("$seed")
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "$0: seeds ${failed[*]} of $config failed (see their logs above)" >&2
  exit 1
fi
