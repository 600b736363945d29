#!/usr/bin/env bash
# Every fault scenario (configs/faults/*.py) and the healthy baseline over NUM_SEEDS training seeds (the
# fault itself is fixed by config.data.scenario.seed), and each data fault's lever over LEVER_SEEDS seeds,
# into OUT/<name>/seed_K; then the table (launch/summarize.py).
#
#   launch/faults.sh runs/faults 3 1
set -uo pipefail
out=${1:-runs/faults} seeds=${2:-3} lever_seeds=${3:-1}
python=${PYTHON:-python3}
[ -x .venv/bin/python ] && python=${PYTHON:-.venv/bin/python}
run() {  # name seeds config [overrides...]; a failing run (the diverged fault) does not stop the rest
  local name=$1 n=$2 config=$3
  shift 3
  launch/seeds.sh "$config" "$out/$name" "$n" "$@"
}
for config in configs/faults/*.py; do
  name=$(basename "$config" .py)
  [ "$name" = __init__ ] || run "$name" "$seeds" "$config"
done
run lighting_shift+lighting_aug "$lever_seeds" configs/faults/lighting_shift.py \
  --config.augment.brightness=0.35 --config.augment.contrast=0.5
run lighting_shift+standardize "$lever_seeds" configs/faults/lighting_shift.py --config.augment.standardize=True
run class_imbalance+inverse_weights "$lever_seeds" configs/faults/class_imbalance.py \
  --config.imbalance.class_weighting=inverse
run class_imbalance+oversample "$lever_seeds" configs/faults/class_imbalance.py \
  --config.imbalance.resampling=oversample
run orientation+characters "$lever_seeds" configs/faults/orientation.py --config.augment.preset=characters \
  --config.augment.vertical_flip=False --config.augment.rotation_range=10
"$python" -m launch.summarize "$out"  # accuracy and doctor tables
