"""The doctor's learning curve: does the run lack data? It trains the run's own config on the first 1/4 and
1/2 of the same training split (`config.data.train_fraction`, nested subsets) for the same number of steps
(epochs x 4 and x 2, evaluations as often in steps), beside the baseline on the same seeds, and fits a power
law to each seed's validation error, err(n) = a * n^b (the usual shape of learning curves: Hestness et al.
2017), through its three points. The fit's err(n) - err(2n) predicts what twice as many training examples
would gain.

What the doctor does with it (experiments.verify):
- it runs with `learning_curve='auto'` when the diagnosis holds an `overfitting` finding (memorising a small
  training set is the case where more data is the cure no config change can stand in for), or `'always'`;
- the prediction is **confirmed** when the one-sample 95% t-interval of the per-seed predicted gains lies
  above 0; a confirmed prediction becomes a finding of its own (`overfitting`, `evidence.lever='more_data'`,
  no overrides: the remedy is data, which no retraining here supplies), ranked after the measured fixes;
- it counts against `healthy` like any confirmed change: a predicted gain above twice the baseline's seed
  standard deviation.
"""

from __future__ import annotations

import math

import numpy as np

from cnn_val import ablate
from cnn_val.doctor.run_view import Run

FRACTIONS = {"data_1_4": 0.25, "data_1_2": 0.5}  # arm name -> share of the run's training examples
MIN_EXAMPLES_PER_CLASS = 10  # at the smallest fraction, per class on average; fewer is no curve to fit
ERROR_FLOOR = 1e-4  # a seed with (near) zero validation error would make log(err) meaningless


def arms(run: Run) -> list[ablate.Arm]:
  """The two subset arms, or [] when the run is too small for a curve (or its size is unknown)."""
  train = ((run.audit or {}).get("splits", {}).get("train", {}) or {}).get("count")
  classes = max(run.num_classes, 2)
  if not train or min(FRACTIONS.values()) * train < MIN_EXAMPLES_PER_CLASS * classes:
    return []
  fraction = float(run.get("data.train_fraction", 1.0) or 1.0)
  epochs, every = int(run.get("num_epochs")), int(run.get("eval_every_epochs", 1) or 1)
  return [ablate.Arm(name, {"data.train_fraction": f * fraction, "num_epochs": int(round(epochs / f)),
                            "eval_every_epochs": int(round(every / f))})
          for name, f in FRACTIONS.items()]


def fit(examples: list[float], accuracies: list[float]) -> tuple[float, float, float]:
  """A power law through one seed's points: (a, b, predicted gain of 2n over the largest n) where
  err = a * n^b, fitted by least squares on log(err) against log(n)."""
  x = np.log(np.asarray(examples, float))
  y = np.log(np.maximum(1.0 - np.asarray(accuracies, float), ERROR_FLOOR))
  b, log_a = np.polyfit(x, y, 1)
  n = max(examples)
  a = math.exp(log_a)
  return a, float(b), a * n ** b - a * (2 * n) ** b


def read(run: Run, table_arms: dict, base: dict | None, seeds: list[int]) -> dict | None:
  """The curve from the aggregate table: per seed its points and fit, and the predicted gain of doubling the
  data (mean, 95% CI over seeds, one-sample t-test p-value), or None when fewer than 2 seeds have all three
  points."""
  from scipy import stats  # pylint: disable=import-outside-toplevel
  if not base or any(name not in table_arms for name in FRACTIONS):
    return None
  train = run.audit["splits"]["train"]["count"]
  sizes = [int(round(f * train)) for f in FRACTIONS.values()] + [train]
  columns = [table_arms[name]["final_val_accuracy_values"] for name in FRACTIONS] + [
      base["final_val_accuracy_values"]]
  per_seed = []
  for i, seed in enumerate(seeds):
    accuracies = [column[i] if i < len(column) else None for column in columns]
    if any(a is None for a in accuracies):
      continue
    a, b, gain = fit(sizes, accuracies)
    per_seed.append({"seed": seed, "accuracies": accuracies, "a": a, "exponent": b, "predicted_gain": gain})
  if len(per_seed) < 2:
    return None
  gains = [s["predicted_gain"] for s in per_seed]
  stat = ablate.mean_ci(gains)
  p = float(stats.ttest_1samp(gains, 0.0).pvalue) if stat["std"] else (0.0 if stat["mean"] else 1.0)
  full = [s["accuracies"][-1] for s in per_seed]
  half = [s["accuracies"][1] for s in per_seed]
  halving = ablate.paired_difference(full, half)
  return {"examples": sizes, "seeds": per_seed, "predicted_gain": stat, "p_value": p,
          "exponent": float(np.mean([s["exponent"] for s in per_seed])),
          "halving_cost": {"mean": halving["mean"], "ci95": halving["ci95"], "p_value": halving["p_value"]},
          "accuracy": {"mean": float(np.mean(full)), "std": float(np.std(full, ddof=1))},
          "confirmed": bool(stat["ci95"] and stat["ci95"][0] > 0)}


def verified(curve: dict, verify_dir: str) -> dict:
  """The curve as a finding's `verified` record (a predicted change: `predicted` says so)."""
  gain = curve["predicted_gain"]
  doubled = [s["accuracies"][-1] + s["predicted_gain"] for s in curve["seeds"]]
  return {"metric": "final_val_accuracy", "higher_is_better": True, "arm": "data_1_2", "seeds": gain["n"],
          "baseline": dict(curve["accuracy"]),
          "fixed": {"mean": float(np.mean(doubled)), "std": float(np.std(doubled, ddof=1))},
          "delta": gain["mean"], "ci95": gain["ci95"], "p_value": curve["p_value"], "confirmed": curve["confirmed"],
          "runs": f"{verify_dir}/runs/data_1_2", "applied": False,
          "predicted": "learning curve: a power law per seed through 1/4, 1/2 and all of the training data, "
                       "extrapolated to twice as much",
          "overrides": {}}


def finding(curve: dict, verify_dir: str, high_gain: float) -> dict:
  """A confirmed curve as a finding: the run is limited by the amount of its training data."""
  v = verified(curve, verify_dir)
  gain, (lo, hi) = v["delta"], v["ci95"]
  n = curve["examples"]
  acc = [float(np.mean([s["accuracies"][i] for s in curve["seeds"]])) for i in range(3)]
  return {
      "cause": "overfitting", "severity": "high" if gain >= high_gain else "medium",
      "confidence": round(min(0.95, 1 - curve["p_value"]), 3),
      "evidence": {"lever": "more_data", "train_examples": n[-1], "examples": n,
                   "val_accuracy_by_examples": acc, "power_law_exponent": curve["exponent"], "gain": gain,
                   "ci95": [lo, hi], "seeds": v["seeds"]},
      "explanation": (
          f"Trained on the first {n[0]:,} and {n[1]:,} of its {n[2]:,} training examples for the same number "
          f"of steps, the run's config reaches {100 * acc[0]:.2f}% and {100 * acc[1]:.2f}% validation accuracy "
          f"against {100 * acc[2]:.2f}%: a power law fitted to each seed's error (err ~ n^{curve['exponent']:.2f}) "
          f"predicts {100 * gain:+.2f} points (95% CI {100 * lo:+.2f} to {100 * hi:+.2f}) from twice as many "
          f"examples. The run is limited by the amount of its data: no change to the model or the recipe "
          f"supplies what more examples would."),
      "fix": {"summary": f"Collect more training examples: twice as many are predicted to gain about "
                         f"{100 * gain:.1f} points (a prediction from the learning curve, not a measured run).",
              "overrides": {}},
      "verified": v, "source": "experiment"}
