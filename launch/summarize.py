"""Markdown tables of run directories grouped by name: OUT/<name>/seed_K/ (or seedK/, an ablation sweep's
SWEEP/runs/<arm>/seedK/).

    python -m launch.summarize runs/faults
    python -m launch.summarize runs/mnist5k/runs

Accuracy table, per name: seeds, the last evaluation's validation accuracy and balanced accuracy, the best
validation accuracy, and the test accuracy (mean, and the standard deviation over seeds when there are
several). Doctor table, per name: the top finding of each seed's diagnosis.json with its confidence, and
the verdicts.
"""

import collections
import os
import sys

import numpy as np

from cnn_val import ablate, doctor, rundir
from cnn_val.doctor.finding import verification_result


def _fmt(values):
  values = [v for v in values if v is not None]
  if not values:
    return "-"
  mean = 100 * np.mean(values)
  return f"{mean:.2f}%" if len(values) == 1 else f"{mean:.2f} ± {100 * np.std(values, ddof=1):.2f}%"


def _names(out):
  """The run groups of `out`: its folders (logs and other files beside them are skipped)."""
  return [n for n in sorted(os.listdir(out)) if os.path.isdir(os.path.join(out, n))]


def _seed_dirs(out, name):
  folder = os.path.join(out, name)
  return [os.path.join(folder, d) for d in sorted(os.listdir(folder))
          if d.startswith("seed") and d.removeprefix("seed").removeprefix("_").isdigit()]


def accuracy_table(out: str) -> str:
  lines = ["| run | seeds | val accuracy (last) | val balanced accuracy | best val accuracy | test accuracy |",
           "| --- | --- | --- | --- | --- | --- |"]
  for name in _names(out):
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
  for name in _names(out):
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


def verify_table(out: str) -> str:
  """Per fault run directory OUT/<fault> with a verified diagnosis (launch/verify_faults.sh): the healthy
  reference, the fault and the fault with the doctor's top fix (mean ± std over seeds), the share of the
  loss recovered, the paired 95% CI of the gain, and the doctor's verdict."""
  lines = ["| fault | top finding | fix | healthy | fault | fault + fix | recovered | gain, 95% CI (points) | "
           "result | verdict |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
  for name in _names(out):
    diagnosis = rundir.read_json(os.path.join(out, name), doctor.DIAGNOSIS_FILE) if os.path.isdir(
        os.path.join(out, name)) else None
    if not diagnosis or "verification" not in diagnosis:
      continue
    verified = [f for f in diagnosis["findings"] if f.get("verified")]
    if not verified:
      lines.append(f"| {name} | - | - | - | - | - | - | - | not verified | {diagnosis['verdict']} |")
      continue
    f = verified[0]
    v = f["verified"]
    fix = ", ".join(f"{k}={val}" for k, val in v.get("overrides", {}).items())
    if v.get("predicted"):  # the learning curve's finding: twice the data, a prediction, not a trained fix
      fix = "twice the training data (predicted by the learning curve)"
    metric = "" if v["higher_is_better"] else " (val - test gap)"
    ci = f"{100 * v['delta']:+.2f} [{100 * v['ci95'][0]:+.2f}, {100 * v['ci95'][1]:+.2f}]" if v.get("ci95") else "-"
    reference = f"{100 * v['reference']:.2f}" if v.get("reference") is not None else "-"
    recovered = f"{100 * v['recovered']:.0f}%" if v.get("recovered") is not None else "-"
    baseline, fixed = ablate.format_percent(v["baseline"]), ablate.format_percent(v["fixed"])
    lines.append(f"| {name} | {f['cause']} | {fix}{metric} | {reference} | {baseline} | {fixed} | "
                 f"{recovered} | {ci} | {verification_result(v) or 'unverified'} | {diagnosis['verdict']} |")
  return "\n".join(lines)


if __name__ == "__main__":
  args = sys.argv[1:]
  if args and args[0] == "--verify":
    print(verify_table(args[1] if len(args) > 1 else "runs/verify"))
  else:
    out_dir = args[0] if args else "runs/faults"
    print(accuracy_table(out_dir) + "\n\n" + doctor_table(out_dir))
