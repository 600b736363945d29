"""The `still_learning` evidence's calibration (README, The doctor, "Still learning when it stopped"): for each run,
what validation gained over the last third of its evaluations, in points, images and standard errors, how far its
validation loss fell there, and what the doctor concludes.

    .venv/bin/python -m benchmarks.still_learning --runs='runs/still/*/runs/*/seed*'

Reads the finished run directories the glob(s) match (nothing is written); the diagnosis is this version's
(`rules.diagnose`). Runs are grouped by their parent folder (a sweep's arm); prints a markdown table, one row per
group, each column the range over its runs.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app
from absl import flags

from benchmarks.run_table import grouped_runs, tally, value_range
from cnn_val.ablate import run_status
from cnn_val.doctor import signal_rules
from cnn_val.doctor.rules import diagnose
from cnn_val.doctor.run_view import Run

_RUNS = flags.DEFINE_list("runs", None, "Globs of run directories (comma-separated).", required=True)


def measure(workdir: str) -> dict:
  """The run's gain over its last third (points, images, standard errors), its validation loss's fall there
  (x ln K), the severity of the finding the doctor bases on it (none where it reads none: rules.still_learning),
  and this version's verdict and findings."""
  run = Run(workdir)
  m = signal_rules.still_learning_measures(run) or {}
  diagnosis = diagnose(workdir)
  findings = " + ".join(f"{f['cause']} ({f['severity']})" for f in diagnosis["findings"]) or "none"
  read = next((f["severity"] for f in diagnosis["findings"] if "still_learning" in f["evidence"]), "none")
  se = m.get("standard_error")
  return {"evaluations": len(run.rows), "val": 100 * run.val_acc, "gain": 100 * m["gain"] if m else None,
          "images": m.get("images"), "z": m["gain"] / se if se else None, "fall": m.get("loss_fall"),
          "evidence": read, "verdict": diagnosis["verdict"], "findings": findings}


def main(argv):
  del argv
  groups = grouped_runs(_RUNS.value, lambda w: run_status(w) == "finished")
  if not groups:
    raise app.UsageError(f"--runs={','.join(_RUNS.value)} matches no finished run directory.")
  print("| runs | n | evaluations | final val accuracy | gain, last third (points) | images | standard errors | "
        "val loss fall (x ln K) | still learning | verdicts | findings |")
  print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
  for group, workdirs in groups.items():
    rows = [measure(w) for w in workdirs]
    span = lambda key, f: value_range([r[key] for r in rows], f, " to ")
    print(f"| {group} | {len(rows)} | {span('evaluations', 'd')} | {span('val', '.2f')}% | {span('gain', '.2f')} | "
          f"{span('images', '.0f')} | {span('z', '.1f')} | {span('fall', '.3f')} | "
          f"{tally([r['evidence'] for r in rows])} | {tally([r['verdict'] for r in rows])} | "
          f"{tally([r['findings'] for r in rows])} |")


if __name__ == "__main__":
  app.run(main)
