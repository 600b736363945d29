#!/usr/bin/env bash
# The doctor's verified fixes on the public fault configs: the healthy reference over SEEDS seeds (for a fault
# that changes the task, its own: orientation_healthy, colour_healthy; resumable sweeps), then for each fault
# its run (seed 0), the doctor's --verify of the top fix over SEEDS seeds (the run itself is the
# baseline's first seed), and the table (python -m launch.summarize --verify OUT). A fault the single-run rules
# miss (no finding with a fix, or a healthy verdict), or whose fixes are all refuted, gets the lever menu,
# bounded to $LEVERS (default wider,batchnorm,block_dropout,weight_decay,cosine,lr_range_test and the follow-up's
# combined, longer_x2, a confirmed longer training still learning twice as long again, weaker_x2, a confirmed
# weaker regularisation weaker again, regularised_deeper(_bn), a confirmed regularisation with another conv
# in each block, without and with BatchNorm, and robust_loss, a confirmed label fix on the generalized
# cross-entropy; not wider_x2: the levers whose causes such faults have, capacity
# and regularisation, not deeper_blocks, which trains about 3x as long as the fault's run on this CPU, unless a
# regularisation was confirmed first; LEVERS= for the whole menu).
#
#   launch/verify_faults.sh runs/verify 3 2 [fault ...]      # OUT SEEDS PARALLEL [faults; default: all]
set -uo pipefail
out=${1:-runs/verify} seeds=${2:-3} parallel=${3:-2}
shift $(( $# < 3 ? $# : 3 ))
python=${PYTHON:-python3}
[ -x .venv/bin/python ] && python=${PYTHON:-.venv/bin/python}
faults=("$@")
default_levers=wider,batchnorm,block_dropout,weight_decay,cosine,lr_range_test,combined,longer_x2,weaker_x2
levers=${LEVERS-$default_levers,regularised_deeper,regularised_deeper_bn,robust_loss}
if [ ${#faults[@]} -eq 0 ]; then
  for config in configs/faults/*.py; do
    name=$(basename "$config" .py)
    case $name in __init__|healthy|orientation_healthy|colour_healthy) ;; *) faults+=("$name") ;; esac
  done
fi
mkdir -p "$out"
"$python" launch/ablate.py --config=configs/faults/healthy.py --out="$out/healthy" --seeds="$seeds" --arm=base: \
  --parallel="$parallel" > "$out/healthy.log" 2>&1 || echo "healthy reference failed: $out/healthy.log"
for name in "${faults[@]}"; do
  start=$(date +%s)
  ref=healthy  # the same task without the fault: a fault that changes the task has its own reference
  case $name in orientation) ref=orientation_healthy ;; colour_shortcut) ref=colour_healthy ;; esac
  [ "$ref" != healthy ] && "$python" launch/ablate.py --config="configs/faults/$ref.py" --out="$out/$ref" \
    --seeds="$seeds" --arm=base: --parallel="$parallel" > "$out/$ref.log" 2>&1
  # A fault that diverges exits 1 by design; the doctor has still written its diagnosis.
  "$python" -m cnn_val.main --config="configs/faults/$name.py" --workdir="$out/$name" > "$out/$name.log" 2>&1
  "$python" -m cnn_val.doctor --workdir="$out/$name" --verify --seeds="$seeds" --parallel="$parallel" \
    --explore=auto ${levers:+--levers="$levers"} --max_fixes=1 --reference="$out/$ref/runs/base/seed*" \
    >> "$out/$name.log" 2>&1
  echo "$name: $(tail -2 "$out/$name.log" | head -1) ($(( $(date +%s) - start )) s)"
done
"$python" -m launch.summarize --verify "$out"
