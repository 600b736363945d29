"""A Markdown table of run directories grouped by name: OUT/<name>/seed_K/metrics.jsonl.

    python -m launch.summarize runs/faults

Per name: seeds, the last evaluation's validation accuracy and balanced accuracy, the best validation
accuracy, and the test accuracy (mean, and the spread over seeds when there are several).
"""

import os
import sys

import numpy as np

from cnn_val import rundir


def _fmt(values):
  values = [v for v in values if v is not None]
  if not values:
    return "-"
  mean = 100 * np.mean(values)
  return f"{mean:.2f}%" if len(values) == 1 else f"{mean:.2f} ± {100 * np.std(values, ddof=1):.2f}%"


def summarize(out: str) -> str:
  lines = ["| run | seeds | val accuracy (last) | val balanced accuracy | best val accuracy | test accuracy |",
           "| --- | --- | --- | --- | --- | --- |"]
  for name in sorted(os.listdir(out)):
    runs = [rundir.read_metrics(os.path.join(out, name, d)) for d in sorted(os.listdir(os.path.join(out, name)))
            if d.startswith("seed_")]
    runs = [r for r in runs if r and "test_accuracy" in r[-1]]  # finished runs only
    if not runs:
      continue
    lines.append(f"| {name} | {len(runs)} | {_fmt([r[-1]['val_accuracy'] for r in runs])} | "
                 f"{_fmt([r[-1].get('val_balanced_accuracy') for r in runs])} | "
                 f"{_fmt([max(x['val_accuracy'] for x in r) for r in runs])} | "
                 f"{_fmt([r[-1]['test_accuracy'] for r in runs])} |")
  return "\n".join(lines)


if __name__ == "__main__":
  print(summarize(sys.argv[1] if len(sys.argv) > 1 else "runs/faults"))
