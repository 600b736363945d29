"""A sweep's results from its run directories: per-arm statistics (scipy's t distribution), paired
differences against the baseline on the same seeds, results.csv/md and the plots."""

from __future__ import annotations

import csv
import json
import math
import os
from typing import Sequence

import numpy as np

from cnn_val import rundir

from cnn_val.ablate.sweep import (METRICS, PLOTS_DIR, RESULTS_CSV, RESULTS_MD, SWEEP_FILE, Sweep, SweepError,
                                  read_run, run_dir)


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> dict:
  """n, mean, sample std and the t-interval of the mean (None where n < 2)."""
  from scipy import stats  # pylint: disable=import-outside-toplevel
  x = np.asarray([v for v in values if v is not None], float)
  n = len(x)
  if n == 0:
    return {"n": 0, "mean": None, "std": None, "ci95": None}
  mean = float(x.mean())
  if n < 2:
    return {"n": 1, "mean": mean, "std": None, "ci95": None}
  std = float(x.std(ddof=1))
  if std == 0.0:
    return {"n": n, "mean": mean, "std": 0.0, "ci95": [mean, mean]}
  lo, hi = stats.t.interval(confidence, n - 1, loc=mean, scale=std / math.sqrt(n))
  return {"n": n, "mean": mean, "std": std, "ci95": [float(lo), float(hi)]}


def paired_difference(treated: Sequence[float], baseline: Sequence[float], confidence: float = 0.95) -> dict:
  """treated - baseline on the same seeds: mean difference, its t-interval and the paired t-test p-value."""
  from scipy import stats  # pylint: disable=import-outside-toplevel
  pairs = [(t, b) for t, b in zip(treated, baseline) if t is not None and b is not None]
  d = np.asarray([t - b for t, b in pairs], float)
  out = mean_ci(d, confidence)
  out["p_value"] = None
  if out["n"] >= 2 and out["std"]:
    out["p_value"] = float(stats.ttest_rel([t for t, _ in pairs], [b for _, b in pairs]).pvalue)
  elif out["n"] >= 2:  # every seed moved by exactly the same amount
    out["p_value"] = 0.0 if out["mean"] != 0 else 1.0
  return out


def aggregate(out: str) -> dict:
  """Per arm and metric: mean_ci over its seeds; per arm: the paired difference against the baseline.
  Reads sweep.json (what the arms are) and the run directories, nothing else."""
  spec = rundir.read_json(out, SWEEP_FILE)
  if spec is None:
    raise SweepError(f"{out} holds no {SWEEP_FILE}: it is not a sweep directory (launch/ablate.py makes one).")
  sweep = Sweep.from_json(spec)
  runs = {(a.name, s): read_run(run_dir(out, a.name, s)) for a in sweep.arms for s in sweep.seeds}
  done = ("finished", "diverged")
  arms = []
  for arm in sweep.arms:
    mine = [runs[arm.name, s] for s in sweep.seeds]
    entry = {"arm": arm.name, "overrides": dict(arm.overrides), "baseline": arm.name == sweep.baseline,
             "finished": sum(r["status"] in done for r in mine), "diverged": sum(r["status"] == "diverged" for r in mine),
             "seeds": [s for s, r in zip(sweep.seeds, mine) if r["status"] in done],
             "seconds": mean_ci([r["seconds"] for r in mine if r["status"] in done])}
    for key, _, _ in METRICS:
      entry[key] = mean_ci([r[key] for r in mine if r["status"] in done])
      entry[f"{key}_values"] = [r[key] if r["status"] in done else None for r in mine]
      if arm.name != sweep.baseline:
        base = [runs[sweep.baseline, s] for s in sweep.seeds]
        ok = [r["status"] in done and b["status"] in done for r, b in zip(mine, base)]
        entry[f"{key}_vs_baseline"] = paired_difference([r[key] for r, k in zip(mine, ok) if k],
                                                        [b[key] for b, k in zip(base, ok) if k])
    entry["curve"] = _mean_curve([r["curve"] for r in mine if r["status"] in done])
    arms.append(entry)
  return {"baseline": sweep.baseline, "seeds": sweep.seeds, "arms": arms,
          "incomplete": sorted(f"{a}/seed{s}" for (a, s), r in runs.items() if r["status"] not in done)}


def _mean_curve(curves):
  by_epoch: dict[int, list[float]] = {}
  for curve in curves:
    for epoch, acc in curve:
      by_epoch.setdefault(epoch, []).append(acc)
  return [(e, float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, len(v))
          for e, v in sorted(by_epoch.items())]


def curve_cut(curve) -> int:
  """How many of a mean curve's points (`_mean_curve`'s) average every seed the arm has there: after them some of
  its runs had stopped (early stopping, divergence), and the mean over the rest is another sample, not the same one
  continued; plots draw it dashed."""
  full = max(c[3] for c in curve)
  return max(i for i, c in enumerate(curve) if c[3] == full) + 1


def format_percent(stat: dict | None, *, signed=False) -> str:
  """A mean_ci summary of fractions as '91.00 ± 1.00' (percent), or '-'."""
  if not stat or stat.get("mean") is None:
    return "-"
  sign = "+" if signed else ""
  text = f"{100 * stat['mean']:{sign}.2f}"
  if stat.get("std") is not None:
    text += f" ± {100 * stat['std']:.2f}"
  return text


def _ci(stat: dict | None) -> str:
  if not stat or not stat.get("ci95"):
    return "-"
  lo, hi = stat["ci95"]
  return f"[{100 * lo:+.2f}, {100 * hi:+.2f}]"


def format_p(diff: dict | None) -> str:
  """A p-value to 3 significant digits, or '-'."""
  return "-" if not diff or diff.get("p_value") is None else f"{diff['p_value']:.3g}"


def results_markdown(table: dict) -> str:
  lines = ["| arm | overrides | n | final val acc % | 95% CI | best val acc % | test acc % | val - test | "
           "wall s | Δ final val vs baseline (pts) | 95% CI of Δ | p (paired t) |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
  for a in table["arms"]:
    final = a["final_val_accuracy"]
    ci = f"[{100 * final['ci95'][0]:.2f}, {100 * final['ci95'][1]:.2f}]" if final.get("ci95") else "-"
    diff = a.get("final_val_accuracy_vs_baseline")
    overrides = ", ".join(f"{k}={v}" for k, v in a["overrides"].items()) or "(baseline)"
    n = f"{a['finished']}" + (f" ({a['diverged']} diverged)" if a["diverged"] else "")
    lines.append(
        f"| {a['arm']}{' (baseline)' if a['baseline'] else ''} | {overrides} | {n} | {format_percent(final)} | {ci} | "
        f"{format_percent(a['best_val_accuracy'])} | {format_percent(a['test_accuracy'])} | "
        f"{format_percent(a['val_minus_test_accuracy'])} | "
        f"{'-' if a['seconds']['mean'] is None else round(a['seconds']['mean'])} | "
        f"{format_percent(diff, signed=True) if diff else '-'} | {_ci(diff)} | "
        f"{format_p(diff)} |")
  text = "\n".join(lines)
  if table["incomplete"]:
    text += f"\n\nNot finished (not counted): {', '.join(table['incomplete'])}."
  return text + "\n"


def write_results(out: str) -> dict:
  """results.csv, results.md and plots/ from the run directories; returns the aggregate."""
  table = aggregate(out)
  fields = ["arm", "baseline", "overrides", "finished", "diverged", "seconds_mean"]
  for key, _, _ in METRICS:
    fields += [f"{key}_{s}" for s in ("mean", "std", "ci95_lo", "ci95_hi")]
    fields += [f"{key}_delta", f"{key}_delta_ci95_lo", f"{key}_delta_ci95_hi", f"{key}_delta_p"]
  tmp = os.path.join(out, f"{RESULTS_CSV}.tmp")
  with open(tmp, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=fields)
    writer.writeheader()
    for a in table["arms"]:
      row = {"arm": a["arm"], "baseline": a["baseline"], "overrides": json.dumps(a["overrides"]),
             "finished": a["finished"], "diverged": a["diverged"], "seconds_mean": a["seconds"]["mean"]}
      for key, _, _ in METRICS:
        s, d = a[key], a.get(f"{key}_vs_baseline") or {}
        row.update({f"{key}_mean": s["mean"], f"{key}_std": s["std"],
                    f"{key}_ci95_lo": (s["ci95"] or [None, None])[0], f"{key}_ci95_hi": (s["ci95"] or [None, None])[1],
                    f"{key}_delta": d.get("mean"), f"{key}_delta_ci95_lo": (d.get("ci95") or [None, None])[0],
                    f"{key}_delta_ci95_hi": (d.get("ci95") or [None, None])[1], f"{key}_delta_p": d.get("p_value")})
      writer.writerow(row)
  os.replace(tmp, os.path.join(out, RESULTS_CSV))
  with open(os.path.join(out, RESULTS_MD), "w") as f:
    f.write(results_markdown(table))
  plot_results(out, table)
  return table


def plot_results(out: str, table: dict) -> dict:
  """plots/arms.png (final validation accuracy per arm, 95% CI, seeds as dots) and plots/curves.png (mean
  validation accuracy per epoch with a ±1 std band); returns their paths relative to `out`."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  entries = [a for a in table["arms"] if a["final_val_accuracy"]["n"]]
  if not entries:
    return {}
  os.makedirs(os.path.join(out, PLOTS_DIR), exist_ok=True)
  paths = {}
  fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(entries) + 1.5), 3.6))
  means = [100 * a["final_val_accuracy"]["mean"] for a in entries]
  errs = [[100 * (a["final_val_accuracy"]["mean"] - a["final_val_accuracy"]["ci95"][0]) if a["final_val_accuracy"]["ci95"]
           else 0 for a in entries],
          [100 * (a["final_val_accuracy"]["ci95"][1] - a["final_val_accuracy"]["mean"]) if a["final_val_accuracy"]["ci95"]
           else 0 for a in entries]]
  colors = ["0.55" if a["baseline"] else "tab:blue" for a in entries]
  ax.bar(range(len(entries)), means, yerr=errs, capsize=5, color=colors)
  for i, a in enumerate(entries):
    values = [100 * v for v in a["final_val_accuracy_values"] if v is not None]
    ax.plot([i] * len(values), values, "k.", markersize=5)
  ax.set_xticks(range(len(entries)), [a["arm"] for a in entries], rotation=20, ha="right")
  low = min(min(means) - max(max(errs[0]), 0.5) - 1.0, min(means) * 0.98)
  ax.set_ylim(max(0.0, low), min(100.0, max(means) + max(max(errs[1]), 0.5) + 1.0))
  ax.set(ylabel="final validation accuracy (%)", title="Arms: mean over seeds, 95% CI, seeds as dots")
  ax.grid(axis="y", alpha=0.3)
  fig.tight_layout()
  paths["arms"] = f"{PLOTS_DIR}/arms.png"
  fig.savefig(os.path.join(out, paths["arms"]), dpi=90)
  plt.close(fig)
  fig, ax = plt.subplots(figsize=(6, 3.6))
  fewer = False
  for a in entries:
    curve = a["curve"]
    if not curve:
      continue
    epochs = [c[0] for c in curve]
    mean = np.array([100 * c[1] for c in curve])
    std = np.array([100 * c[2] for c in curve])
    cut = curve_cut(curve)
    line, = ax.plot(epochs[:cut], mean[:cut], "o-", markersize=3, label=a["arm"],
                    color="0.4" if a["baseline"] else None)
    if cut < len(curve):
      fewer = True
      ax.plot(epochs[cut - 1:], mean[cut - 1:], "o--", markersize=3, mfc="none",
              color=line.get_color())
    ax.fill_between(epochs[:cut], (mean - std)[:cut], (mean + std)[:cut], alpha=0.2, color=line.get_color())
  ax.set(xlabel="epoch", ylabel="validation accuracy (%)",
         title="Validation accuracy: mean ± 1 std over seeds" + ("\n(dashed: fewer seeds, the others stopped)"
                                                                  if fewer else ""))
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  paths["curves"] = f"{PLOTS_DIR}/curves.png"
  fig.savefig(os.path.join(out, paths["curves"]), dpi=90)
  plt.close(fig)
  return paths
