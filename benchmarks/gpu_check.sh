#!/usr/bin/env bash
# GPU check on a machine with an accelerator and JAX (CUDA) but perhaps without TensorFlow or this project's
# pure-Python dependencies: wheels carried in .whl/ (ml-collections, dm-pix, cleanlab, termcolor) are installed
# to /tmp/site first. Training reads Fashion-MNIST from an .npz (config.data.name='npz'; no TensorFlow needed):
# NPZ=path (default .gpu_data/fm.npz, written here from TFDS by `python -m cnn_val.data.export_npz` where TensorFlow is).
#
#   bash benchmarks/gpu_check.sh [default] [population] [bn] [fused] [steps] [levers] [bn3] [verify3] [scaling]
#   (default: the first 5)
#
# levers: configs/default.py for 25 epochs, then `python -m cnn_val.doctor --verify --explore=always` over 3
# seeds with LEVERS (default wider,deeper_blocks,batchnorm,cosine,wider_x2,combined), LEVERS_PARALLEL workers
# sharing the GPU (default 4): what limits the default recipe at its own budget, which the CPU cannot afford (issue 10);
# deeper_blocks_x2 is left out of the default for time (LEVERS=...,deeper_blocks_x2 adds it).
# bn3: configs/fashion_mnist_bn.py over seeds 0-2 and the doctor's verdict on each (issue 15's healthy BatchNorm
# ConvNet; 28 min a run on the 2-core CPU).
# verify3: a 3-seed verification of one fix (faults/healthy.py, base and a dropout-rate arm, 2 workers) with a
# worker per run (--population=never) and with each arm's seeds as one population (always): the population's
# gain end to end on a GPU (issue 13).
#
# scaling: where several GPUs exist, pmap's weak scaling from 1 to N of them (benchmarks/gpu_check.py --scaling;
# issue 14); one GPU prints that there is nothing to scale.
# steps: train-step throughput against PyTorch eager (benchmarks/gpu_check.py); fused: per-step loop against
# fused chunks (benchmarks/fused_steps.py); population: P = 1..64 seed models at once (benchmarks/population.py);
# default, bn: configs/default.py (25 epochs) and configs/fashion_mnist_bn.py (20 epochs) end to end, wall time
# and timing.json (EXTRA="--config.FIELD=VALUE ..." adds overrides). OUT=dir keeps the logs and the runs' timing, metrics and reports.
set -uo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
if compgen -G ".whl/*.whl" > /dev/null; then
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
# cnn_val.configs is the top-level configs/ (installed so by pip); without an install, point at it.
[ -e cnn_val/configs ] || "$py" -c "import cnn_val.configs" 2>/dev/null || ln -s ../configs cnn_val/configs
export PYTHONPATH=.:${PYTHONPATH:-} PYTHONUNBUFFERED=1
out=${OUT:-/tmp/gpu_check} npz=${NPZ:-.gpu_data/fm.npz}
mkdir -p "$out"
parts=("$@"); [ ${#parts[@]} -eq 0 ] && parts=(default population bn fused steps)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$py" -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, jax.devices())"
e2e() {  # NAME CONFIG [overrides...]
  local name=$1 config=$2; shift 2
  local start=$(date +%s.%N)
  timeout 200 "$py" -m cnn_val.main --config="$config" --workdir="/tmp/runs/$name" --config.data.name=npz \
    --config.data.root="$npz" "$@" 2>&1 | tail -32
  echo "$name: wall $("$py" -c "print(round($(date +%s.%N) - $start, 1))") s"
  cp "/tmp/runs/$name/timing.json" "$out/${name}_timing.json" 2>/dev/null
  cp "/tmp/runs/$name/metrics.jsonl" "$out/${name}_metrics.jsonl" 2>/dev/null
  head -c 4000 "/tmp/runs/$name/report.md" > "$out/${name}_report.md" 2>/dev/null
}
for part in "${parts[@]}"; do
  echo "=== $part ($(date +%T))"
  case $part in
    scaling) timeout 240 "$py" -m benchmarks.gpu_check --scaling --rounds=3 --seconds=1 2>&1 | grep -v "^[IW][0-9]" ;;
    steps) timeout 120 "$py" -m benchmarks.gpu_check --rounds=3 --seconds=0.5 2>&1 | grep -v "^[IW][0-9]" ;;
    fused) timeout 120 "$py" -m benchmarks.fused_steps --models=SeedCNN,SeedCNNDropout,ConvNet-BN --batch_sizes=32 \
             --per_call=50 --rounds=3 --seconds=1 2>&1 | grep -v "^[IW][0-9]" ;;
    population) timeout 180 "$py" -m benchmarks.population --members=1,2,4,8,16,32,64 --rounds=3 --seconds=1 \
                  2>&1 | grep -v "^[IW][0-9]" ;;
    default) e2e default configs/default.py ${EXTRA:-} ;;
    bn3)  # the BatchNorm ConvNet over seeds 0-2 (3 workers sharing the GPU): does the doctor call it healthy (issue 15)?
      timeout ${BN3_TIMEOUT:-420} "$py" launch/ablate.py --config=configs/fashion_mnist_bn.py --out=/tmp/runs/bn3 \
        --seeds=3 --arm=base: --parallel=3 --config.data.name=npz --config.data.root="$npz" ${EXTRA:-} 2>&1 \
        | grep -v "^[IW][0-9]" | tail -12
      for s in 0 1 2; do
        cp "/tmp/runs/bn3/runs/base/seed$s/diagnosis.json" "$out/bn3_seed${s}_diagnosis.json" 2>/dev/null
        "$py" -c "import json; d = json.load(open('/tmp/runs/bn3/runs/base/seed$s/diagnosis.json')); print('seed $s', d['verdict'], [(f['cause'], f['severity']) for f in d['findings']])" 2>/dev/null
      done ;;
    verify3)  # a 3-seed verification of one fix: a worker per run against one population per arm (issue 13)
      for pop in never always; do
        start=$(date +%s.%N)
        timeout ${VERIFY3_TIMEOUT:-240} "$py" launch/ablate.py --config=configs/faults/healthy.py \
          --out=/tmp/runs/verify3_$pop --seeds=3 --arm=base: --arm=drop:model.dropout_rate=0.3 --parallel=2 \
          --population=$pop --config.data.name=npz --config.data.root="$npz" ${EXTRA:-} 2>&1 \
          | grep -v "^[IW][0-9]" | grep -E "^(start|done|\|)" | tail -12
        echo "verify3 population=$pop: wall $("$py" -c "print(round($(date +%s.%N) - $start, 1))") s"
      done ;;
    levers)  # configs/default.py's own 25 epochs, then the doctor's lever menu over 3 seeds, 4 workers on the GPU
      e2e levers configs/default.py ${EXTRA:-}
      levers=${LEVERS:-wider,deeper_blocks,batchnorm,cosine,wider_x2,combined}
      timeout ${LEVERS_TIMEOUT:-420} "$py" -m cnn_val.doctor --workdir=/tmp/runs/levers --verify --seeds=3 \
        --parallel=${LEVERS_PARALLEL:-4} --explore=always --levers=$levers \
        2>&1 | grep -v "^[IW][0-9]" | tail -40
      cp /tmp/runs/levers/diagnosis.json "$out/levers_diagnosis.json" 2>/dev/null
      cp /tmp/runs/levers/verify/results.md "$out/levers_results.md" 2>/dev/null
      cp /tmp/runs/levers/verify/results.csv "$out/levers_results.csv" 2>/dev/null ;;
    bn) e2e fashion_mnist_bn configs/fashion_mnist_bn.py ${EXTRA:-} ;;
    *) echo "unknown part $part (steps, fused, population, default, bn, levers, bn3, verify3)" ;;
  esac
done 2>&1 | tee "$out/log.txt"
