"""Re-diagnoses a run directory, and proves the fixes: `python -m cnn_val.doctor --workdir=W [--reaudit]
[--verify [--seeds=3] [--parallel=2] [--budget_minutes=M] [--max_runs=N] [--explore=auto] [--reference=GLOB]]`.

Writes diagnosis.json, report.md and plots/ from the run directory's files alone (no training process).
The audit is reused from audit.json; --reaudit (or a missing audit.json) recomputes it from the data named
in config.json, and so for augment_check.json where the run's augmentation flips, rotates, shifts, shears or
zooms. --verify trains each top fix (and, when nothing explains the run, the seed's levers)
against the run's own config over --seeds seeds into W/verify/ (cnn_val/doctor/experiments.py).
"""

import sys

from absl import app
from absl import flags

from cnn_val import ablate, cli, doctor

_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory to diagnose.", required=True)
_REAUDIT = flags.DEFINE_bool("reaudit", False, "Recompute audit.json (and augment_check.json) from the run's data.")
_VERIFY = flags.DEFINE_bool("verify", False, "Train the fixes against the run's config over seeds (W/verify/).")
_SEEDS = flags.DEFINE_integer("seeds", 3, "--verify: seeds per arm (the run's seed and the next ones); a CI "
                              "needs 2 or more.", lower_bound=2)
_PARALLEL = flags.DEFINE_integer("parallel", 1, "--verify: worker processes (cores split between them).",
                                 lower_bound=1)
_POPULATION = flags.DEFINE_enum("population", "auto", ["auto", "always", "never"],
                                "--verify: train an arm's seeds as one population in one worker (cnn_val.population); "
                                "auto = where a GPU is at hand (on a CPU separate workers are faster).")
_BUDGET = flags.DEFINE_float("budget_minutes", 0.0, "--verify: stop when the first run says the rest won't fit.")
_MAX_RUNS = flags.DEFINE_integer("max_runs", 0, "--verify: refuse more runs than this (0 = no limit).")
_MAX_FIXES = flags.DEFINE_integer("max_fixes", 2, "--verify: how many of the top findings' fixes to try.")
_EXPLORE = flags.DEFINE_enum("explore", "auto", ["auto", "always", "never"],
                             "--verify: the lever menu: auto = when no finding carries a fix or the run looks healthy.")
_LEVERS = flags.DEFINE_list("levers", None, "--verify: explore only these levers of the menu (e.g. "
                            "wider,cosine), and of the follow-up only wider_x2, deeper_blocks_x2, "
                            "deeper_blocks_bn, longer_x2, "
                            "weaker_x2, regularised_deeper, regularised_deeper_bn, robust_loss and combined when "
                            "named, to bound the cost; default: the whole menu and follow-up.")
_FOLLOW_UP = flags.DEFINE_bool("follow_up", True, "--verify: after the menu, a second stage on what was confirmed "
                                "(the wider model widened again, the deeper blocks deepened again and normalised, a "
                                "longer training "
                                "still learning lengthened again, a weaker regularisation weakened again, a "
                                "confirmed regularisation deepened, with and without BatchNorm; a confirmed label "
                                "fix on the generalized cross-entropy; the confirmed levers combined).")
_LEARNING_CURVE = flags.DEFINE_enum(
    "learning_curve", "auto", ["auto", "always", "never"],
    "--verify: train the config on 1/4 and 1/2 of its training data too, for the gain twice the data would "
    "bring (a saturating power law through the three points: an upper estimate); auto = when the diagnosis "
    "holds an overfitting finding.")
_REFERENCE = flags.DEFINE_string("reference", None, "--verify: a glob of finished healthy run directories of the "
                                 "same budget, for the share of the loss a fix recovers (e.g. "
                                 "'runs/healthy/runs/base/seed*').")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  options = {}
  if _VERIFY.value:
    options = dict(seeds=_SEEDS.value, parallel=_PARALLEL.value, population=_POPULATION.value,
                   budget_minutes=_BUDGET.value,
                   max_runs=_MAX_RUNS.value, max_fixes=_MAX_FIXES.value, explore=_EXPLORE.value,
                   reference=_REFERENCE.value, levers=_LEVERS.value, follow_up=_FOLLOW_UP.value,
                   learning_curve=_LEARNING_CURVE.value)
  try:
    result = doctor.examine(_WORKDIR.value, reaudit=_REAUDIT.value, verify=_VERIFY.value, **options)
  except (ValueError, FileNotFoundError, ablate.SweepError) as e:  # says what to do: no traceback
    print(f"Error: {e}", file=sys.stderr)
    raise SystemExit(2) from None
  print(doctor.summary(result))
  print(f"Report: {_WORKDIR.value}/report.md")


if __name__ == "__main__":
  cli.run(main)
