#!/usr/bin/env bash
# GPU check on a machine with an accelerator and JAX (CUDA) but perhaps without this project's pure-Python
# dependencies: wheels carried in .whl/ (e.g. ml-collections) are installed to /tmp/site first.
set -euo pipefail
cd "$(dirname "$0")/.."
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
PYTHONPATH=.:${PYTHONPATH:-} python3 -m benchmarks.gpu_check "$@"
