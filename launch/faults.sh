#!/usr/bin/env bash
# Every fault scenario, the healthy baseline and each fault's lever, over NUM_SEEDS seeds (training seed;
# the fault itself is fixed by config.data.scenario.seed), into OUT/<name>/seed_K; then the table.
#
#   launch/faults.sh runs/faults 1
set -euo pipefail
out=${1:-runs/faults} seeds=${2:-1}
python=${PYTHON:-python3}
[ -x .venv/bin/python ] && python=${PYTHON:-.venv/bin/python}
run() {  # name config [overrides...]
  local name=$1 config=$2
  shift 2
  launch/seeds.sh "$config" "$out/$name" "$seeds" "$@"
}
run healthy configs/faults/healthy.py
run lighting_shift configs/faults/lighting_shift.py
run lighting_shift+lighting_aug configs/faults/lighting_shift.py --config.augment.brightness=0.35 \
  --config.augment.contrast=0.5
run class_imbalance configs/faults/class_imbalance.py
run class_imbalance+inverse_weights configs/faults/class_imbalance.py --config.imbalance.class_weighting=inverse
run class_imbalance+oversample configs/faults/class_imbalance.py --config.imbalance.resampling=oversample
run label_noise configs/faults/label_noise.py
run small_data configs/faults/small_data.py
run data_leakage configs/faults/data_leakage.py
run orientation_healthy configs/faults/orientation_healthy.py
run orientation configs/faults/orientation.py
run orientation+characters configs/faults/orientation.py --config.augment.preset=characters \
  --config.augment.vertical_flip=False --config.augment.rotation_range=10
"$python" -m launch.summarize "$out"
