"""How well the doctor's label check (cleanlab on the training probe's outputs) finds the labels a fault
scenario corrupted, and how much it flags on clean data.

    .venv/bin/python -m benchmarks.label_check --runs='runs/verify/healthy/runs/base/seed*,runs/faults/pair_noise'

For each run directory: its `train_predictions.npz` (written by training at its last evaluation, from the best
checkpoint's weights since a later version, the final ones before; for a run without the file, from its best
checkpoint, `evaluate.write_train_predictions`) and which weights gave it, cleanlab's flagged examples
(`cnn_val/doctor/label_check.py`), and, against the labels the run's data has without its label
noise (the same data loaded with `label_noise=0`), the truly corrupted share of the probe, the precision and
recall of the flags, and the top flagged class pair. Prints a table (the README's calibration of the
label_noise rule).
"""

import glob
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app
from absl import flags
import numpy as np

from cnn_val import evaluate, rundir
from cnn_val.ablate.sweep import stored_config
from cnn_val.data import loading
from cnn_val.doctor import label_check

_RUNS = flags.DEFINE_list("runs", [], "Run directories (globs allowed).")


def truth(workdir: str, index: np.ndarray) -> np.ndarray:
  """Whether each probe example's training label differs from its label without the scenario's noise."""
  config = stored_config(workdir)
  noisy = loading.load_data(config)[1]["train"]["label"]
  with config.unlocked():
    config.data.scenario.label_noise = 0.0
  clean = loading.load_data(config)[1]["train"]["label"]
  if len(clean) != len(noisy):
    raise ValueError(f"{workdir}: the scenario changes the training split's size; truth is not comparable.")
  return noisy[index] != clean[index]


def main(argv):
  del argv
  runs = sorted({d for pattern in _RUNS.value for d in glob.glob(pattern)})
  print("| run | weights | examples | corrupted | flagged | precision | recall | top flagged pair (given -> "
        "seen, share of given) |\n| --- | --- | --- | --- | --- | --- | --- | --- |")
  for workdir in runs:
    if not os.path.exists(os.path.join(workdir, rundir.TRAIN_PREDICTIONS_FILE)):
      evaluate.write_train_predictions(workdir)
    issues = label_check.label_issues(workdir)
    result = label_check.flagged_in(workdir)  # the doctor's own flags (cached: cleanlab runs once)
    if isinstance(result, str):
      raise SystemExit(f"{workdir}: {result}")
    _, labels, index, positions, _ = result
    wrong = truth(workdir, index)
    flagged = np.zeros(len(labels), bool)
    flagged[positions] = True
    precision = (flagged & wrong).sum() / max(flagged.sum(), 1)
    recall = (flagged & wrong).sum() / max(wrong.sum(), 1) if wrong.any() else float("nan")
    top = issues["pairs"][0] if issues["pairs"] else None
    pair = f"{top['given']} -> {top['suggested']} ({top['share_of_given']:.1%})" if top else "-"
    print(f"| {workdir} | {issues.get('weights', '-')} | {len(labels)} | {wrong.mean():.1%} | "
          f"{issues['fraction']:.1%} | {precision:.2f} | {recall:.2f} | {pair} |", flush=True)


if __name__ == "__main__":
  app.run(main)
