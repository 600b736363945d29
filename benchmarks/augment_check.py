"""The augmentation check against what each augmentation costs the CNN: its calibration (README, The doctor,
"Augmentation that changes the labels").

    .venv/bin/python -m benchmarks.augment_check --sweeps=runs/augcal/digits,runs/augcal/fm

Each sweep is a `launch/ablate.py` directory whose baseline trains without augmentation and whose other arms
each turn one on. For every such arm: what the check (`cnn_val/augment_check.py`) says of each transform, on
the arm's own data (its seed-0 run's config.json), beside the accuracy the arm lost against the baseline on
the same seeds (the sweep's results.csv: mean paired difference of final validation accuracy, its 95% CI).
Prints a markdown table.
"""

import csv
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app
from absl import flags

from cnn_val import augment, augment_check, rundir
from cnn_val.ablate.sweep import config_from_dict
from cnn_val.data import loading

_SWEEPS = flags.DEFINE_list("sweeps", [], "launch/ablate.py sweep directories (a baseline without augmentation).")


def rows(sweep: str):
  """(arm, overrides, delta, lo, hi, n, check) for each arm of `sweep` that augments."""
  with open(os.path.join(sweep, "results.csv")) as f:
    results = list(csv.DictReader(f))
  for r in results:
    if r["baseline"] == "True":
      continue
    workdir = os.path.join(sweep, "runs", r["arm"], "seed0")
    config = config_from_dict(rundir.read_json(workdir, rundir.CONFIG_FILE))
    params = augment.from_config(config.augment)
    if not augment_check.transforms(params):
      continue
    splits, arrays = loading.load_data(config)
    check = augment_check.check(arrays["train"], arrays["validation"], params, splits.num_classes)
    delta = [100 * float(r[k]) for k in ("final_val_accuracy_delta", "final_val_accuracy_delta_ci95_lo",
                                          "final_val_accuracy_delta_ci95_hi")]
    yield r["arm"], r["overrides"], delta, int(r["finished"]), check


def main(argv):
  del argv
  print("| sweep | arm | transform | nearest-neighbour errors, without -> with the copies (lost, won) | "
        "increase | p | label-destroying | CNN's final val accuracy vs no augmentation, 95% CI (points) |")
  print("| --- | --- | --- | --- | --- | --- | --- | --- |")
  for sweep in _SWEEPS.value:
    for arm, _, (d, lo, hi), n, check in rows(sweep):
      for name, t in check["transforms"].items():
        values = ", ".join(f"{k}={v}" for k, v in t["values"].items())
        print(f"| {sweep} | {arm} | {values} | {check['errors']} -> {t['errors_with_copies']} of "
              f"{check['validation_examples']} ({t['lost']}, {t['won']}) | {100 * t['error_increase']:+.0f}% | "
              f"{t['p_value']:.1g} | {'yes' if t['label_destroying'] else 'no'} | {d:+.2f} [{lo:+.2f}, {hi:+.2f}] "
              f"({n} seeds) |")


if __name__ == "__main__":
  app.run(main)
