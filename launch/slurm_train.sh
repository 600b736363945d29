#!/usr/bin/env bash
# One training run over several GPU nodes of a SLURM cluster: one process per node, each with all of its GPUs,
# joined by jax.distributed (JAX reads the SLURM environment: coordinator, process count and id).
#
#   sbatch --nodes=2 launch/slurm_train.sh --config=configs/default.py --workdir=/shared/runs/default
#
# The workdir must be on a filesystem every node sees (checkpoints are written by all processes, run files by
# process 0). The same command again resumes from the latest checkpoint. Install with
# `pip install -e '.[cuda]'` on the cluster's Python. Written from JAX's and SLURM's documentation; not run on a
# cluster here (tests/test_multiprocess.py runs the same code path as 2 processes on one machine).
#SBATCH --job-name=cnn_val
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=16
#SBATCH --time=04:00:00
#SBATCH --output=cnn_val-%j.log
set -euo pipefail
srun --kill-on-bad-exit=1 python -m cnn_val.main --distributed "$@"
