"""The `still_learning` evidence's calibration (README, The doctor, "Still learning when it stopped"): for each run,
what validation gained over the last third of its evaluations, in points, images and standard errors, how far its
validation loss fell there, and what the doctor concludes.

    .venv/bin/python -m benchmarks.still_learning --runs='runs/still/*/runs/*/seed*'

Reads the finished run directories the glob(s) match (nothing is written); the diagnosis is this version's
(`rules.diagnose`). Runs are grouped by their parent folder (a sweep's arm); prints a markdown table, one row per
group, each column the range over its runs.
"""

import glob
import os
import re

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app
from absl import flags

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
  workdirs = sorted({w.rstrip("/") for pattern in _RUNS.value for w in glob.glob(pattern)
                     if run_status(w) == "finished"})
  if not workdirs:
    raise app.UsageError(f"--runs={','.join(_RUNS.value)} matches no finished run directory.")
  groups = {}
  for workdir in workdirs:  # a sweep's seeds together (.../<arm>/seed<k>), any other run on its own
    group = os.path.dirname(workdir) if re.fullmatch(r"seed\d+", os.path.basename(workdir)) else workdir
    groups.setdefault(group, []).append(measure(workdir))
  print("| runs | n | evaluations | final val accuracy | gain, last third (points) | images | standard errors | "
        "val loss fall (x ln K) | still learning | verdicts | findings |")
  print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
  for group, rows in groups.items():
    def span(key, f):
      v = [r[key] for r in rows if r[key] is not None]
      return "-" if not v else " to ".join(dict.fromkeys((f"{min(v):{f}}", f"{max(v):{f}}")))
    count = lambda values: "; ".join(f"{v} x{values.count(v)}" for v in sorted(set(values)))
    print(f"| {group} | {len(rows)} | {span('evaluations', 'd')} | {span('val', '.2f')}% | {span('gain', '.2f')} | "
          f"{span('images', '.0f')} | {span('z', '.1f')} | {span('fall', '.3f')} | "
          f"{count([r['evidence'] for r in rows])} | {count([r['verdict'] for r in rows])} | "
          f"{count([r['findings'] for r in rows])} |")


if __name__ == "__main__":
  app.run(main)
