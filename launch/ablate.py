"""Ablations: a config's arms (overrides) x seeds as ordinary runs, then the comparison with the baseline.

    python launch/ablate.py --config=configs/default.py --out=runs/ablate/wide --seeds=3 \
        --arm=base: --arm=wide:model.width_multiplier=2.0 [--arm=NAME:FIELD=VALUE,FIELD=VALUE ...] \
        [--grid=model.dropout_rate=0.3;0.5] [--sweep=my_sweep.py] [--config.FIELD=VALUE ...] \
        [--parallel=2] [--max_runs=N] [--budget_minutes=M]
        [--executor=local|slurm|submitit_local] [--slurm_partition=P --slurm_timeout_min=240 --slurm_gpus_per_task=1]

`--config.*` overrides apply to every arm; an arm without overrides is the baseline (or --baseline=NAME).
Run the same command again to resume: finished runs are skipped, killed runs resume from their checkpoints.
Writes OUT/results.md, OUT/results.csv and OUT/plots/ (see cnn_val/ablate/).
"""

import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from cnn_val import ablate, cli, rundir

_CONFIG = config_flags.DEFINE_config_file("config", None, "Base experiment config file.", lock_config=True)
_OUT = flags.DEFINE_string("out", None, "Sweep directory (created; an existing sweep resumes).")
_SEEDS = flags.DEFINE_integer("seeds", 3, "Seeds per arm: the config's seed and the next ones.", lower_bound=1)
_ARMS = flags.DEFINE_multi_string("arm", [], "NAME:FIELD=VALUE[,FIELD=VALUE...]; NAME: is the baseline.")
_GRID = flags.DEFINE_multi_string("grid", [], "FIELD=V1;V2;...: arms for every combination of the grids.")
_SWEEP = flags.DEFINE_string("sweep", None, "Python file with get_sweep() -> list of override dicts.")
_BASELINE = flags.DEFINE_string("baseline", None, "The arm compared against (default: the one without overrides).")
_PARALLEL = flags.DEFINE_integer("parallel", 1, "Worker processes; CPU cores (and GPUs) are split between them.",
                                 lower_bound=1)
_POPULATION = flags.DEFINE_enum("population", "auto", ["auto", "always", "never"],
                                "Runs whose configs differ only in seed, learning rate and weight decay train as one "
                                "population per worker (cnn_val.population): always, never, or auto = where a GPU is "
                                "at hand (on a CPU separate workers are faster). The local executor only.")
_POPULATION_SIZE = flags.DEFINE_integer("population_size", 0, "At most this many runs per population (0 = all).",
                                        lower_bound=0)
_MAX_RUNS = flags.DEFINE_integer("max_runs", 0, "Refuse a sweep with more runs left to train (0 = no limit).")
_BUDGET = flags.DEFINE_float("budget_minutes", 0.0, "Stop when the first run's time says the rest will not fit.")
_EXECUTOR = flags.DEFINE_enum("executor", "local", ["local", "slurm", "submitit_local"],
                              "Where runs train: worker processes here, a SLURM job array (submitit; --parallel tasks "
                              "at a time), or submitit's local executor (the cluster path as processes here).")
_PARTITION = flags.DEFINE_string("slurm_partition", "", "SLURM partition ('' = the cluster's default).")
_TIMEOUT = flags.DEFINE_integer("slurm_timeout_min", 240, "SLURM time limit of each run's task, in minutes.")
_GPUS = flags.DEFINE_integer("slurm_gpus_per_task", 0, "GPUs each run's SLURM task asks for.")
_CPUS = flags.DEFINE_integer("slurm_cpus_per_task", 0, "CPUs each run's SLURM task asks for (0 = default).")
_MEM = flags.DEFINE_float("slurm_mem_gb", 0.0, "Memory each run's SLURM task asks for (0 = default).")
flags.mark_flags_as_required(["config", "out"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  try:
    arms = [ablate.parse_arm(a) for a in _ARMS.value] + ablate.grid_arms(_GRID.value)
    if _SWEEP.value:
      arms += ablate.sweep_file_arms(_SWEEP.value)
    base = rundir.config_to_dict(_CONFIG.value)
    seeds = [base["seed"] + i for i in range(_SEEDS.value)]
    sweep = ablate.Sweep(base, arms, seeds, _BASELINE.value)
    slurm = ablate.SlurmOptions(partition=_PARTITION.value, timeout_min=_TIMEOUT.value,
                                gpus_per_task=_GPUS.value, cpus_per_task=_CPUS.value, mem_gb=_MEM.value)
    ablate.run_sweep(sweep, _OUT.value, parallel=_PARALLEL.value, max_runs=_MAX_RUNS.value,
                     budget_minutes=_BUDGET.value, executor=_EXECUTOR.value, slurm=slurm,
                     population=_POPULATION.value, population_size=_POPULATION_SIZE.value)
  except (ablate.SweepError, ValueError) as e:  # the message says what to change: no traceback
    print(f"Error: {e}", file=sys.stderr)
    raise SystemExit(2) from None
  with open(f"{_OUT.value}/{ablate.RESULTS_MD}") as f:
    print(f.read())


if __name__ == "__main__":
  cli.run(main)
