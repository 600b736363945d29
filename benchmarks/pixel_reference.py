"""The pixel reference's calibration (README, The doctor, "The pixel reference"): each run's best validation error
against a 1-nearest-neighbour lookup's on the pixels of its own data, and what the doctor concludes.

    .venv/bin/python -m benchmarks.pixel_reference --runs='runs/mnist5k/runs/*/seed*' [--reaudit]

For every run directory the glob(s) match: the audit's `pixel_reference` (computed from the run's config.json and
data, and written to its audit.json, where the audit predates it or with --reaudit), the run's best validation
error, their ratio, and the diagnosis by this version (`rules.diagnose`, nothing written but the audit). Runs are
grouped by their parent folder (a sweep's arm); prints a markdown table, one row per group.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app
from absl import flags

from benchmarks.run_table import grouped_runs, tally, value_range
from cnn_val import knn, rundir
from cnn_val.doctor import audit_run
from cnn_val.doctor.rules import diagnose

_RUNS = flags.DEFINE_list("runs", None, "Globs of run directories (comma-separated).", required=True)
_REAUDIT = flags.DEFINE_bool("reaudit", False, "Recompute every audit.json, not only those without the reference.")


def measure(workdir: str, reaudit: bool = False) -> dict:
  """The run's best validation error, the lookup's, their ratio, and this version's verdict and findings."""
  report = rundir.read_json(workdir, rundir.AUDIT_FILE) or {}
  if reaudit or "pixel_reference" not in report:
    report = audit_run(workdir)
  diagnosis = diagnose(workdir)
  reference = report.get("pixel_reference") or {}
  best = diagnosis["run"].get("best_val_accuracy")
  ratio = knn.error_ratio(best, reference)
  findings = " + ".join(f"{f['cause']} ({f['severity']})" for f in diagnosis["findings"]) or "none"
  return {"error": None if best is None else 1 - best, "lookup": 1 - reference["accuracy"] if reference else None,
          "ratio": ratio, "verdict": diagnosis["verdict"], "findings": findings}


def main(argv):
  del argv
  groups = grouped_runs(_RUNS.value, lambda w: os.path.exists(os.path.join(w, rundir.CONFIG_FILE)))
  if not groups:
    raise app.UsageError(f"--runs={','.join(_RUNS.value)} matches no run directory (none holds config.json).")
  print("| runs | n | best validation error | the lookup's | ratio | verdicts | findings |")
  print("| --- | --- | --- | --- | --- | --- | --- |")
  for group, workdirs in groups.items():
    rows = [measure(w, _REAUDIT.value) for w in workdirs]
    errors = [100 * r["error"] for r in rows if r["error"] is not None]
    lookups = ", ".join(f"{v:.2f}%" for v in sorted({round(100 * r["lookup"], 2) for r in rows
                                                     if r["lookup"] is not None})) or "-"
    print(f"| {group} | {len(rows)} | {value_range(errors, '.2f')}% | {lookups} | "
          f"{value_range([r['ratio'] for r in rows], '.2f')} | {tally([r['verdict'] for r in rows])} | "
          f"{tally([r['findings'] for r in rows])} |")


if __name__ == "__main__":
  app.run(main)
