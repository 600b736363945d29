"""The augmentation check against what each augmentation costs the CNN: its calibration (README, The doctor,
"Augmentation that changes the labels").

    .venv/bin/python -m benchmarks.augment_check --sweeps=runs/augcal/digits,runs/augcal/fm \
        --configs=configs/faults/orientation.py

Each sweep is a `launch/ablate.py` directory whose baseline trains without augmentation and whose other arms
each turn one on. For every such arm: what the check (`cnn_val/augment_check.py`) says of each transform, on
the arm's own data (its seed-0 run's config.json), beside the accuracy the arm lost against the baseline on
the same seeds (the sweep's results.csv: mean paired difference of final validation accuracy, its 95% CI).
`--configs`: the check alone on each config's data and augmentation (no CNN column; `--flips`: horizontal flips
alone instead). Prints a markdown table.
"""

import csv
import os
import runpy

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app
from absl import flags

from cnn_val import augment, augment_check
from cnn_val.ablate.sweep import stored_config
from cnn_val.data import loading

_SWEEPS = flags.DEFINE_list("sweeps", [], "launch/ablate.py sweep directories (a baseline without augmentation).")
_CONFIGS = flags.DEFINE_list("configs", [], "Config files whose augmentation is checked on their data.")
_FLIPS = flags.DEFINE_bool("flips", False, "With --configs: horizontal flips alone on each config's data, "
                           "whatever its augmentation (what the lever menu asks before it offers `natural`).")


def _check(config, params=None):
  splits, arrays = loading.load_data(config)
  params = params or augment.from_config(config.augment)
  return augment_check.check(arrays["train"], arrays["validation"], params, splits.num_classes)


def rows(sweep: str):
  """(arm, overrides, (delta, lo, hi), finished runs, check) for each arm of `sweep` that augments and has a
  difference against the baseline (finished runs on both sides)."""
  with open(os.path.join(sweep, "results.csv")) as f:
    results = list(csv.DictReader(f))
  for r in results:
    if r["baseline"] == "True" or not r["final_val_accuracy_delta"]:
      continue
    workdir = os.path.join(sweep, "runs", r["arm"], "seed0")
    config = stored_config(workdir)
    params = augment.from_config(config.augment)
    if not augment_check.transforms(params):
      continue
    check = _check(config)
    delta = [100 * float(r[k]) for k in ("final_val_accuracy_delta", "final_val_accuracy_delta_ci95_lo",
                                          "final_val_accuracy_delta_ci95_hi")]
    yield r["arm"], r["overrides"], delta, int(r["finished"]), check


def main(argv):
  del argv
  print("| sweep | arm | transform | nearest-neighbour errors, without -> with the copies (lost, won) | "
        "increase | p | label-destroying | CNN's final val accuracy vs no augmentation, 95% CI (points) |")
  print("| --- | --- | --- | --- | --- | --- | --- | --- |")
  cases = [(sweep, arm, check, f"{d:+.2f} [{lo:+.2f}, {hi:+.2f}] ({n} seeds)")
           for sweep in _SWEEPS.value for arm, _, (d, lo, hi), n, check in rows(sweep)]
  for path in _CONFIGS.value:
    config = runpy.run_path(path)["get_config"]()
    cases.append((path, "-", _check(config, augment.Augment(horizontal_flip=True) if _FLIPS.value else None), "-"))
  for source, arm, check, cost in cases:
    for t in check["transforms"].values():
      values = ", ".join(f"{k}={v}" for k, v in t["values"].items())
      print(f"| {source} | {arm} | {values} | {check['errors']} -> {t['errors_with_copies']} of "
            f"{check['queries']} ({t['lost']}, {t['won']}) | {100 * t['error_increase']:+.0f}% | "
            f"{t['p_value']:.1g} | {'yes' if t['label_destroying'] else 'no'} | {cost} |")


if __name__ == "__main__":
  app.run(main)
