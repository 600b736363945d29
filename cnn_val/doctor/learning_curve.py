"""The doctor's learning curve: does the run lack data? It trains the run's own config on the first 1/4 and
1/2 of the same training split (`config.data.train_fraction`, nested subsets) for the same number of steps
(epochs x 4 and x 2, evaluations as often in steps), beside the baseline on the same seeds, and extrapolates
each seed's three points to twice the data.

The extrapolation: learning curves are power laws with a floor, err(n) = c + a * n^b (Hestness et al. 2017;
Rosenfeld et al. 2020), and three points at n/4, n/2, n fix all three parameters. On such a curve every
doubling gains the same share r = 2^b of the doubling before it, so twice the data is predicted to gain
r * (err(n/2) - err(n)), with r = (err(n/2) - err(n)) / (err(n/4) - err(n/2)) clipped to [0, 1] (no
diminishing return is the most it assumes). Checked on `faults/small_data.py` (1,000 examples), where it
predicted +2.34 points against the +1.49 measured by training on 2,000 (a pure power law without the floor,
fitted by least squares, predicted +2.74): read it as an upper estimate of what twice the data gains, and as
firm evidence that data limits the run when the halving cost is large.

What the doctor does with it (experiments.verify):
- it runs with `learning_curve='auto'` when the diagnosis holds an `overfitting` finding (memorising a small
  training set is the case where more data is the cure no config change can stand in for), or `'always'`;
- the prediction is **confirmed** when the one-sample 95% t-interval of the per-seed predicted gains lies
  above 0; a confirmed prediction becomes a finding of its own (`overfitting`, `evidence.lever='more_data'`,
  no overrides: the remedy is data, which no retraining here supplies), ranked after the measured fixes;
- it counts against `healthy` like any confirmed change: a predicted gain above the baseline's seed standard
  deviation.
"""

from __future__ import annotations

import numpy as np

from cnn_val import ablate
from cnn_val.doctor.run_view import Run

FRACTIONS = {"data_1_4": 0.25, "data_1_2": 0.5}  # arm name -> share of the run's training examples
MIN_EXAMPLES_PER_CLASS = 10  # at the smallest fraction, per class on average; fewer is no curve to fit


def arms(run: Run) -> list[ablate.Arm]:
  """The two subset arms, or [] when the run is too small for a curve (or its size is unknown)."""
  train = run.split_count("train")
  classes = max(run.num_classes, 2)
  if not train or min(FRACTIONS.values()) * train < MIN_EXAMPLES_PER_CLASS * classes:
    return []
  fraction = float(run.get("data.train_fraction", 1.0) or 1.0)
  epochs, every = int(run.get("num_epochs")), int(run.get("eval_every_epochs", 1) or 1)
  return [ablate.Arm(name, {"data.train_fraction": f * fraction, "num_epochs": int(round(epochs / f)),
                            "eval_every_epochs": int(round(every / f))})
          for name, f in FRACTIONS.items()]


def fit(accuracies: list[float]) -> tuple[float, float]:
  """One seed's accuracies at n/4, n/2 and n: (r, the predicted gain of 2n over n), where r is the share of
  the previous doubling's gain in error each doubling gains (the saturating power law through the points)."""
  e = 1.0 - np.asarray(accuracies, float)
  first, last = e[0] - e[1], e[1] - e[2]
  r = float(np.clip(last / first, 0.0, 1.0)) if first > 0 else 0.0
  return r, r * float(last)


def read(run: Run, table_arms: dict, base: dict | None, seeds: list[int]) -> dict | None:
  """The curve from the aggregate table: per seed its points and fit, and the predicted gain of doubling the
  data (mean, 95% CI over seeds, one-sample t-test p-value), or None when fewer than 2 seeds have all three
  points."""
  from scipy import stats  # pylint: disable=import-outside-toplevel
  if not base or any(name not in table_arms for name in FRACTIONS):
    return None
  train = run.split_count("train")
  sizes = [int(round(f * train)) for f in FRACTIONS.values()] + [train]
  columns = [table_arms[name]["final_val_accuracy_values"] for name in FRACTIONS] + [
      base["final_val_accuracy_values"]]
  per_seed = []
  for i, seed in enumerate(seeds):
    accuracies = [column[i] if i < len(column) else None for column in columns]
    if any(a is None for a in accuracies):
      continue
    r, gain = fit(accuracies)
    per_seed.append({"seed": seed, "accuracies": accuracies, "ratio": r, "predicted_gain": gain})
  if len(per_seed) < 2:
    return None
  gains = [s["predicted_gain"] for s in per_seed]
  stat = ablate.mean_ci(gains)
  p = float(stats.ttest_1samp(gains, 0.0).pvalue) if stat["std"] else (0.0 if stat["mean"] else 1.0)
  full = [s["accuracies"][-1] for s in per_seed]
  half = [s["accuracies"][1] for s in per_seed]
  halving = ablate.paired_difference(full, half)
  return {"examples": sizes, "seeds": per_seed, "predicted_gain": stat, "p_value": p,
          "mean_accuracies": [float(np.mean([s["accuracies"][i] for s in per_seed])) for i in range(len(sizes))],
          "ratio": float(np.mean([s["ratio"] for s in per_seed])),
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
          "predicted": "learning curve: a saturating power law per seed through 1/4, 1/2 and all of the "
                       "training data, extrapolated to twice as much (an upper estimate)",
          "overrides": {}}


def finding(curve: dict, verify_dir: str, high_gain: float) -> dict:
  """A confirmed curve as a finding: the run is limited by the amount of its training data."""
  v = verified(curve, verify_dir)
  gain, (lo, hi) = v["delta"], v["ci95"]
  n, acc = curve["examples"], curve["mean_accuracies"]
  return {
      "cause": "overfitting", "severity": "high" if gain >= high_gain else "medium",
      "confidence": round(min(0.95, 1 - curve["p_value"]), 3),
      "evidence": {"lever": "more_data", "train_examples": n[-1], "examples": n,
                   "val_accuracy_by_examples": acc, "doubling_ratio": curve["ratio"], "gain": gain,
                   "ci95": [lo, hi], "seeds": v["seeds"]},
      "explanation": (
          f"Trained on the first {n[0]:,} and {n[1]:,} of its {n[2]:,} training examples for the same number "
          f"of steps, the run's config reaches {100 * acc[0]:.2f}% and {100 * acc[1]:.2f}% validation accuracy "
          f"against {100 * acc[2]:.2f}%: the second doubling gained {100 * curve['ratio']:.0f}% of what the first "
          f"did, and a learning curve that keeps diminishing so predicts {100 * gain:+.2f} points (95% CI "
          f"{100 * lo:+.2f} to {100 * hi:+.2f} over seeds; an upper estimate) from twice as many examples. The run "
          f"is limited by the amount of its data: no change to the model or the recipe supplies what more "
          f"examples would."),
      "fix": {"summary": f"Collect more training examples: twice as many are predicted to gain about "
                         f"{100 * gain:.1f} points (a prediction from the learning curve, not a measured run).",
              "overrides": {}},
      "verified": v, "source": "experiment"}
