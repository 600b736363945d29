"""Markdown tables of run directories grouped by name: OUT/<name>/seed_K/.

    python -m launch.summarize runs/faults

Accuracy table, per name: seeds, the last evaluation's validation accuracy and balanced accuracy, the best
validation accuracy, and the test accuracy (mean, and the standard deviation over seeds when there are
several). Doctor table, per name: the top finding of each seed's diagnosis.json with its confidence, and
the verdicts.
"""

import collections
import os
import sys

import numpy as np

from cnn_val import doctor, rundir


def _fmt(values):
  values = [v for v in values if v is not None]
  if not values:
    return "-"
  mean = 100 * np.mean(values)
  return f"{mean:.2f}%" if len(values) == 1 else f"{mean:.2f} ± {100 * np.std(values, ddof=1):.2f}%"


def _seed_dirs(out, name):
  return [os.path.join(out, name, d) for d in sorted(os.listdir(os.path.join(out, name))) if d.startswith("seed_")]


def accuracy_table(out: str) -> str:
  lines = ["| run | seeds | val accuracy (last) | val balanced accuracy | best val accuracy | test accuracy |",
           "| --- | --- | --- | --- | --- | --- |"]
  for name in sorted(os.listdir(out)):
    runs = [rundir.read_metrics(d) for d in _seed_dirs(out, name)]
    runs = [r for r in runs if r and "test_accuracy" in r[-1]]  # finished runs only
    if not runs:
      continue
    lines.append(f"| {name} | {len(runs)} | {_fmt([r[-1]['val_accuracy'] for r in runs])} | "
                 f"{_fmt([r[-1].get('val_balanced_accuracy') for r in runs])} | "
                 f"{_fmt([max(x['val_accuracy'] for x in r) for r in runs])} | "
                 f"{_fmt([r[-1]['test_accuracy'] for r in runs])} |")
  return "\n".join(lines)


def doctor_table(out: str) -> str:
  lines = ["| run | seeds | top finding (seeds) | its confidence | verdicts | val accuracy (last) |",
           "| --- | --- | --- | --- | --- | --- |"]
  for name in sorted(os.listdir(out)):
    results = [(rundir.read_json(d, doctor.DIAGNOSIS_FILE), rundir.read_metrics(d)) for d in _seed_dirs(out, name)]
    results = [(r, m) for r, m in results if r is not None]
    if not results:
      continue
    tops = collections.Counter(
        f"{r['findings'][0]['cause']} ({r['findings'][0]['severity']})" if r["findings"] else "none"
        for r, _ in results)
    confidences = [r["findings"][0]["confidence"] for r, _ in results if r["findings"]]
    verdicts = collections.Counter(r["verdict"] for r, _ in results)
    top = ", ".join(f"{k} x{v}" for k, v in tops.most_common())
    confidence = f"{np.mean(confidences):.2f}" if confidences else "-"
    verdict = ", ".join(f"{k} x{v}" for k, v in verdicts.most_common())
    accuracy = _fmt([m[-1]["val_accuracy"] for _, m in results if m])
    lines.append(f"| {name} | {len(results)} | {top} | {confidence} | {verdict} | {accuracy} |")
  return "\n".join(lines)


if __name__ == "__main__":
  out_dir = sys.argv[1] if len(sys.argv) > 1 else "runs/faults"
  print(accuracy_table(out_dir) + "\n\n" + doctor_table(out_dir))
