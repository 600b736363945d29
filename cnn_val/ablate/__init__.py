"""The ablation engine: a base config times arms (config overrides) times seeds, trained as ordinary runs.

    sweep = ablate.Sweep(base=rundir.config_to_dict(config), arms=[ablate.Arm("base", {}),
                         ablate.Arm("wide", {"model.width_multiplier": 2.0})], seeds=(0, 1, 2))
    ablate.run_sweep(sweep, "runs/wide", parallel=2)     # resumable: the same call again skips finished runs
    table = ablate.aggregate("runs/wide")                # reads only the run directories

Layout of a sweep directory:

    OUT/sweep.json                 base config, arms, seeds, baseline (what the runs are)
    OUT/runs/<arm>/seed<k>/        an ordinary run directory (train.train_and_evaluate), plus
                                   run_spec.json (its resolved config) and ablate.json (wall time, outcome)
    OUT/results.csv, results.md    per arm: n, mean ± std and 95% CI of the final and best validation
                                   accuracy, test accuracy and wall time; paired differences against the
                                   baseline on the same seeds (95% CI, paired t-test p-value)
    OUT/plots/arms.png, curves.png a bar chart with CIs and the arms' validation curves (mean and band)

Each run executes in its own worker process (`python -m cnn_val.ablate_worker RUN_DIR`), so a crash, a
NaN or a SIGKILL of one run never takes the others with it; the workers die with the sweep (Linux
PR_SET_PDEATHSIG) and a killed run resumes from its latest checkpoint when the sweep is started again.
Modules: `sweep` (arms, seeds, run configs, run directories), `runner` (the worker pool), `cluster` (the
same runs as a SLURM job array through submitit), `results`
(statistics, tables, plots). Nothing here imports the training loop: the workers do.
"""

from cnn_val.ablate.cluster import EXECUTORS, SlurmOptions
from cnn_val.ablate.results import (aggregate, format_p, format_percent, mean_ci, paired_difference, plot_results,
                                    results_markdown, write_results)
from cnn_val.ablate.runner import estimate_minutes, prepare, run_sweep, sweep_lock
from cnn_val.ablate.sweep import (CACHE_DIR, METRICS, PLOTS_DIR, RESULTS_CSV, RESULTS_MD, RUN_RESULT_FILE,
                                  RUN_SPEC_FILE, SWEEP_FILE, Arm, Sweep, SweepError, SweepIncomplete, check_arm,
                                  config_from_dict, epochs_trained, expected_epochs, grid_arms, parse_arm,
                                  parse_overrides, parse_value, read_run, run_config, run_dir, run_status,
                                  seconds_per_epoch, stored_config, strip_prefix, sweep_file_arms)

__all__ = ["CACHE_DIR", "EXECUTORS", "METRICS", "PLOTS_DIR", "RESULTS_CSV", "RESULTS_MD", "RUN_RESULT_FILE",
           "RUN_SPEC_FILE", "SWEEP_FILE", "Arm", "SlurmOptions", "Sweep", "SweepError", "SweepIncomplete", "aggregate",
           "check_arm", "config_from_dict", "estimate_minutes", "format_p", "format_percent", "epochs_trained",
           "expected_epochs", "grid_arms", "mean_ci", "paired_difference", "parse_arm", "parse_overrides",
           "parse_value", "plot_results", "prepare", "read_run", "results_markdown", "run_config", "run_dir",
           "run_status", "run_sweep", "seconds_per_epoch", "stored_config", "strip_prefix", "sweep_file_arms",
           "sweep_lock", "write_results"]
