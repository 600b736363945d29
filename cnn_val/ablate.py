"""The ablation engine: a base config times arms (config overrides) times seeds, trained as ordinary runs.

    sweep = ablate.Sweep(base=rundir.config_to_dict(config), arms=[ablate.Arm("base", {}),
                         ablate.Arm("wide", {"model.width_multiplier": 2.0})], seeds=(0, 1, 2))
    ablate.run_sweep(sweep, "runs/wide", parallel=2)     # resumable: the same call again skips finished runs
    table = ablate.aggregate("runs/wide")                # reads only the run directories

Layout of a sweep directory:

    OUT/sweep.json                 base config, arms, seeds, baseline (what the runs are)
    OUT/runs/<arm>/seed<k>/        an ordinary run directory (train.train_and_evaluate), plus
                                   run_spec.json (its resolved config) and ablate.json (wall time, outcome)
    OUT/results.csv, results.md    per arm: n, mean ± std and 95% CI of the final and best validation
                                   accuracy, test accuracy and wall time; paired differences against the
                                   baseline on the same seeds (95% CI, paired t-test p-value)
    OUT/plots/arms.png, curves.png a bar chart with CIs and the arms' validation curves (mean and band)

Each run executes in its own worker process (`python -m cnn_val.ablate_worker RUN_DIR`), so a crash, a
NaN or a SIGKILL of one run never takes the others with it; the workers die with the sweep (Linux
PR_SET_PDEATHSIG) and a killed run resumes from its latest checkpoint when the sweep is started again.
This module imports nothing from the training loop: the workers do.
"""

from __future__ import annotations

import ast
import contextlib
import copy
import csv
import dataclasses
import difflib
import fcntl
import itertools
import json
import math
import os
import re
import subprocess
import sys
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from cnn_val import ablate_worker

SWEEP_FILE = "sweep.json"
RUN_SPEC_FILE = "run_spec.json"  # the resolved config a worker trains
RUN_RESULT_FILE = "ablate.json"  # the engine's record of a run: wall seconds, attempts, outcome
RESULTS_CSV, RESULTS_MD, PLOTS_DIR = "results.csv", "results.md", "plots"
LOCK_FILE = ".sweep.lock"
CACHE_DIR = ".jax_cache"  # XLA compilations shared by the sweep's workers
# Metrics compared between arms: (key, what it is, higher is better).
METRICS = (("final_val_accuracy", "validation accuracy at the last evaluation", True),
           ("best_val_accuracy", "best validation accuracy over the evaluations", True),
           ("test_accuracy", "test accuracy after the last epoch", True),
           ("val_minus_test_accuracy", "validation minus test accuracy (leakage inflates it)", False))


class SweepError(ValueError):
  """A sweep that cannot run as asked (bad arm, over budget, another sweep in the directory): the message
  says what to change."""


@dataclasses.dataclass(frozen=True)
class Arm:
  """One variant of the base config: `overrides` maps dotted config fields (without `config.`) to values."""
  name: str
  overrides: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Sweep:
  base: dict  # the resolved base config as a plain dict (rundir.config_to_dict)
  arms: Sequence[Arm]
  seeds: Sequence[int]
  baseline: str | None = None  # the arm the others are compared with; None: the arm without overrides

  def __post_init__(self):
    names = [a.name for a in self.arms]
    if not names:
      raise SweepError("A sweep needs at least one arm (e.g. --arm=base: for the unchanged config).")
    for name in names:
      if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+=-]*", name):
        raise SweepError(f"Arm name {name!r}: use letters, digits and . _ + = - only (it names a directory).")
    if len(set(names)) != len(names):
      raise SweepError(f"Arm names must be unique; got {names}.")
    if not self.seeds or len(set(self.seeds)) != len(self.seeds):
      raise SweepError(f"Seeds must be distinct and at least one; got {list(self.seeds)}.")
    self.arms = [Arm(a.name, {_strip(k): _jsonable(v) for k, v in a.overrides.items()}) for a in self.arms]
    self.seeds = [int(s) for s in self.seeds]
    if self.baseline is None:
      self.baseline = next((a.name for a in self.arms if not a.overrides), self.arms[0].name)
    elif self.baseline not in names:
      raise SweepError(f"The baseline arm {self.baseline!r} is not one of the arms {names}.")
    for arm in self.arms:
      run_config(self.base, arm.overrides, self.seeds[0])  # unknown fields fail now, naming the arm's field

  def to_json(self) -> dict:
    return {"base": self.base, "arms": [{"name": a.name, "overrides": dict(a.overrides)} for a in self.arms],
            "seeds": list(self.seeds), "baseline": self.baseline}

  @classmethod
  def from_json(cls, d: dict) -> "Sweep":
    return cls(d["base"], [Arm(a["name"], a["overrides"]) for a in d["arms"]], d["seeds"], d["baseline"])


# ---------------------------------------------------------------------------------------------------------
# Configs: overrides on plain dicts, and back to a locked ConfigDict in the worker.

def _strip(field: str) -> str:
  return field[len("config."):] if field.startswith("config.") else field


def _jsonable(value):
  return [_jsonable(v) for v in value] if isinstance(value, (tuple, list)) else value


def parse_value(text: str):
  """A command-line value: a Python literal (1e-3, True, (64, 128), 'a') or else the string itself."""
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def parse_overrides(text: str) -> dict:
  """'model.widths=(64,128),optim.learning_rate=3e-3' -> {'model.widths': (64, 128), ...}. A comma starts a
  new override only where it is followed by FIELD=, so tuples keep their commas."""
  out = {}
  for part in re.split(r",(?=\s*[A-Za-z_][\w.]*\s*=)", text.strip()) if text.strip() else []:
    field, sep, value = part.partition("=")
    if not sep or not field.strip():
      raise SweepError(f"Override {part!r}: expected FIELD=VALUE, e.g. model.dropout_rate=0.3.")
    out[_strip(field.strip())] = parse_value(value.strip())
  return out


def parse_arm(text: str) -> Arm:
  """'NAME:FIELD=VALUE,FIELD=VALUE' (NAME: alone is an arm without overrides: the baseline)."""
  name, sep, rest = text.partition(":")
  if not sep:
    raise SweepError(f"--arm={text!r}: expected NAME:FIELD=VALUE[,FIELD=VALUE...] (or NAME: for the baseline).")
  return Arm(name.strip(), parse_overrides(rest))


def grid_arms(grid: Sequence[str]) -> list[Arm]:
  """Each entry 'FIELD=V1;V2;...'; the arms are their cartesian product, named FIELD=VALUE+FIELD=VALUE."""
  if not grid:
    return []
  axes = []
  for entry in grid:
    field, sep, values = entry.partition("=")
    if not sep or not values:
      raise SweepError(f"--grid={entry!r}: expected FIELD=V1;V2;... e.g. model.dropout_rate=0.3;0.5;0.7.")
    axes.append([(_strip(field.strip()), parse_value(v.strip())) for v in values.split(";")])
  arms = []
  for combo in itertools.product(*axes):
    name = "+".join(f"{f.split('.')[-1]}={_dir_text(v)}" for f, v in combo)
    arms.append(Arm(name, dict(combo)))
  return arms


def _dir_text(value) -> str:
  text = re.sub(r"[^A-Za-z0-9._-]+", "_", str(value)).strip("_")
  return text or "x"


def sweep_file_arms(path: str) -> list[Arm]:
  """Arms from a Python sweep file whose `get_sweep()` returns a list of override dicts (big_vision's habit);
  a dict's optional 'name' key names its arm."""
  namespace: dict = {"__file__": path}
  with open(path) as f:
    exec(compile(f.read(), path, "exec"), namespace)  # pylint: disable=exec-used  (configs are code too)
  if "get_sweep" not in namespace:
    raise SweepError(f"{path} defines no get_sweep(); it should return a list of override dicts.")
  arms = []
  for i, entry in enumerate(namespace["get_sweep"]()):
    entry = dict(entry)
    name = entry.pop("name", None) or ("+".join(f"{k.split('.')[-1]}={_dir_text(v)}" for k, v in entry.items())
                                       or f"arm{i}")
    arms.append(Arm(name, entry))
  return arms


def run_config(base: dict, overrides: Mapping[str, Any], seed: int) -> dict:
  """The config dict of one run: `base` with `overrides` applied and `seed` set. Every field must exist."""
  config = copy.deepcopy(base)
  for field, value in {**overrides, "seed": seed}.items():
    node, parts = config, field.split(".")
    for i, part in enumerate(parts):
      if not isinstance(node, dict) or part not in node:
        here = ".".join(parts[:i])
        known = sorted(node) if isinstance(node, dict) else []
        close = difflib.get_close_matches(part, known, n=1)
        raise SweepError(f"Override config.{field}: the config has no field {part!r}"
                         + (f" in config.{here}" if here else "")
                         + (f"; did you mean {close[0]!r}?" if close else f"; its fields are {known}."))
      if i == len(parts) - 1:
        node[part] = _jsonable(value)
      node = node[part]
  return config


def _tuples(value):
  return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def config_from_dict(d: dict):
  """A locked ConfigDict from a config dict (a run's config.json): lists become tuples, as the configs write
  them, so that model fields stay hashable."""
  import ml_collections  # pylint: disable=import-outside-toplevel
  def convert(node):
    return {k: convert(v) if isinstance(v, dict) else _tuples(v) for k, v in node.items()}
  config = ml_collections.ConfigDict(convert(d))
  config.lock()
  return config


# ---------------------------------------------------------------------------------------------------------
# Run directories.

def run_dir(out: str, arm: str, seed: int) -> str:
  return os.path.join(out, "runs", arm, f"seed{seed}")


def _read_json(path: str):
  try:
    with open(path) as f:
      return json.load(f)
  except FileNotFoundError:
    return None


def _write_json(path: str, obj) -> None:
  """Atomic: a reader (or a kill) never sees half a file."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=1, sort_keys=True)
  os.replace(tmp, path)


def _read_rows(workdir: str) -> list[dict]:
  rows = []
  with contextlib.suppress(FileNotFoundError), open(os.path.join(workdir, "metrics.jsonl")) as f:
    for line in f:
      with contextlib.suppress(json.JSONDecodeError):  # a torn last line of a killed run: not finished
        rows.append(json.loads(line))
  return rows


def run_status(workdir: str) -> str:
  """'finished', 'diverged' (stopped on NaN/Inf: an outcome, not a failure), 'partial' or 'missing'."""
  if os.path.exists(os.path.join(workdir, "diverged.json")):
    return "diverged"
  config = _read_json(os.path.join(workdir, "config.json"))
  rows = _read_rows(workdir)
  if config is None or not rows:
    return "partial" if os.path.isdir(workdir) else "missing"
  return "finished" if rows[-1].get("epoch") == config.get("num_epochs") else "partial"


def read_run(workdir: str) -> dict:
  """One run's numbers, from its files only."""
  rows = _read_rows(workdir)
  status = run_status(workdir)
  record = _read_json(os.path.join(workdir, RUN_RESULT_FILE)) or {}
  out = {"status": status, "seconds": record.get("seconds"), "curve": [(r["epoch"], r["val_accuracy"]) for r in rows
                                                                        if r.get("val_accuracy") is not None]}
  last = rows[-1] if rows else {}
  final = last.get("val_accuracy")
  if status == "diverged" and final is None:
    # A run that blew up before its first evaluation predicts no better than the majority class.
    pre = _read_json(os.path.join(workdir, "preflight.json")) or {}
    final = next((c.get("value") for c in pre.get("checks", []) if c.get("name") == "majority_class"), None)
  best = max((r["val_accuracy"] for r in rows if r.get("val_accuracy") is not None), default=final)
  test = last.get("test_accuracy")
  out.update(final_val_accuracy=final, best_val_accuracy=best, test_accuracy=test,
             val_minus_test_accuracy=(last["val_accuracy"] - test) if test is not None and
             last.get("val_accuracy") is not None else None)
  return out


# ---------------------------------------------------------------------------------------------------------
# Statistics (scipy's distributions; nothing hand-written).

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
  sweep = Sweep.from_json(_read_json(os.path.join(out, SWEEP_FILE)))
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


def _pct(stat: dict | None, *, signed=False) -> str:
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


def _p(diff: dict | None) -> str:
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
        f"| {a['arm']}{' (baseline)' if a['baseline'] else ''} | {overrides} | {n} | {_pct(final)} | {ci} | "
        f"{_pct(a['best_val_accuracy'])} | {_pct(a['test_accuracy'])} | {_pct(a['val_minus_test_accuracy'])} | "
        f"{'-' if a['seconds']['mean'] is None else round(a['seconds']['mean'])} | "
        f"{_pct(diff, signed=True) if diff else '-'} | {_ci(diff)} | "
        f"{_p(diff)} |")
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


def plot_results(out: str, table: dict, *, arms: Sequence[str] | None = None, prefix: str = "") -> dict:
  """plots/<prefix>arms.png (final validation accuracy per arm, 95% CI) and plots/<prefix>curves.png (mean
  validation accuracy per epoch with a ±1 std band); returns their paths relative to `out`."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  entries = [a for a in table["arms"] if (arms is None or a["arm"] in arms) and a["final_val_accuracy"]["n"]]
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
  paths["arms"] = f"{PLOTS_DIR}/{prefix}arms.png"
  fig.savefig(os.path.join(out, paths["arms"]), dpi=90)
  plt.close(fig)
  fig, ax = plt.subplots(figsize=(6, 3.6))
  for a in entries:
    curve = a["curve"]
    if not curve:
      continue
    epochs = [c[0] for c in curve]
    mean = np.array([100 * c[1] for c in curve])
    std = np.array([100 * c[2] for c in curve])
    line, = ax.plot(epochs, mean, "o-", markersize=3, label=a["arm"], color="0.4" if a["baseline"] else None)
    ax.fill_between(epochs, mean - std, mean + std, alpha=0.2, color=line.get_color())
  ax.set(xlabel="epoch", ylabel="validation accuracy (%)", title="Validation accuracy: mean ± 1 std over seeds")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  paths["curves"] = f"{PLOTS_DIR}/{prefix}curves.png"
  fig.savefig(os.path.join(out, paths["curves"]), dpi=90)
  plt.close(fig)
  return paths


# ---------------------------------------------------------------------------------------------------------
# Running: a pool of worker processes.

def _core_groups(parallel: int) -> list[list[int] | None]:
  """The CPU cores each worker may use: the process's cores split into `parallel` disjoint groups."""
  try:
    cores = sorted(os.sched_getaffinity(0))
  except AttributeError:  # not Linux
    return [None] * parallel
  if parallel <= 1 or len(cores) < parallel:
    return [None] * parallel
  return [cores[i::parallel] for i in range(parallel)]


def _gpu_groups(parallel: int) -> list[str | None]:
  """Visible GPUs split between workers (CUDA_VISIBLE_DEVICES), when there are several per worker or one each."""
  visible = os.environ.get("CUDA_VISIBLE_DEVICES")
  if visible is None:
    try:
      listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
      return [None] * parallel
    visible = ",".join(str(i) for i, line in enumerate(listing.splitlines()) if line.startswith("GPU"))
  gpus = [g for g in visible.split(",") if g.strip()]
  if parallel <= 1 or not gpus:
    return [None] * parallel
  if len(gpus) < parallel:
    raise SweepError(f"--parallel={parallel} workers but {len(gpus)} GPU(s) visible: one GPU per worker at "
                     f"least; lower --parallel to {len(gpus)}.")
  return [",".join(gpus[i::parallel]) for i in range(parallel)]


@dataclasses.dataclass
class _Job:
  arm: str
  seed: int
  workdir: str
  attempts: int = 0
  seconds: float = 0.0


class _Worker:
  def __init__(self, job: _Job, cores, gpus, cache_dir: str, log: Callable[[str], None]):
    self.job, self.start = job, time.monotonic()
    env = dict(os.environ)
    # Runs of a sweep compile the same programs (seeds change data, not shapes): share XLA's compilations
    # through JAX's persistent cache (measured: a tiny run 23 s -> 13 s); a cache the user set is kept.
    env.setdefault("JAX_COMPILATION_CACHE_DIR", cache_dir)
    if gpus is not None:
      env["CUDA_VISIBLE_DEVICES"] = gpus
    # The worker pins itself to its cores and arranges to die with this process (ablate_worker.py): done
    # there, not in a preexec_fn, which would fork this multithreaded process.
    env[ablate_worker.PARENT_ENV] = str(os.getpid())
    if cores is not None:
      env[ablate_worker.CORES_ENV] = ",".join(map(str, cores))
    job.attempts += 1
    self.log_path = os.path.join(job.workdir, "train.log")
    self._log_file = open(self.log_path, "a")  # pylint: disable=consider-using-with
    self.proc = subprocess.Popen([sys.executable, "-m", "cnn_val.ablate_worker", job.workdir], env=env,
                                 stdout=self._log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    log(f"start {job.arm}/seed{job.seed} (attempt {job.attempts}, pid {self.proc.pid}"
        + (f", cores {cores}" if cores else "") + (f", GPUs {gpus}" if gpus else "") + ")")

  def poll(self):
    rc = self.proc.poll()
    if rc is not None:
      self._log_file.close()
      self.job.seconds += time.monotonic() - self.start
    return rc


@contextlib.contextmanager
def _sweep_lock(out: str):
  """One sweep process per directory (an flock: released by the kernel when the holder dies, so a SIGKILLed
  sweep never blocks its own resume)."""
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, LOCK_FILE), "a+") as f:
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      f.seek(0)
      holder = f.read().strip() or "another process"
      raise SweepError(f"{out} is being run by {holder}; wait for it to finish (or stop it), then run the same "
                       f"command again to resume.") from None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()}")
    f.flush()
    yield


def prepare(sweep: Sweep, out: str) -> None:
  """Writes sweep.json for a new sweep, or checks that an existing one is the same sweep (arms may be added,
  seeds extended; a changed base config or a changed arm is refused)."""
  path = os.path.join(out, SWEEP_FILE)
  old = _read_json(path)
  new = sweep.to_json()
  if old is not None:
    if old["base"] != new["base"]:
      changed = sorted(_diff_fields(old["base"], new["base"]))
      raise SweepError(f"{out} holds a sweep of a different base config (fields {', '.join(changed[:8])}); use a "
                       f"new --out, or the same config and overrides as before.")
    old_arms = {a["name"]: a["overrides"] for a in old["arms"]}
    for a in new["arms"]:
      if a["name"] in old_arms and old_arms[a["name"]] != a["overrides"]:
        raise SweepError(f"Arm {a['name']!r} in {out} had overrides {old_arms[a['name']]}, now {a['overrides']}; "
                         f"give the changed arm a new name.")
    # Keep arms and seeds from before that this call does not name: their runs stay part of the sweep.
    names = [a["name"] for a in new["arms"]]
    new["arms"] += [a for a in old["arms"] if a["name"] not in names]
    new["seeds"] += [s for s in old["seeds"] if s not in new["seeds"]]
    if old.get("baseline") in old_arms and new["baseline"] != old["baseline"] and not any(
        a["name"] == new["baseline"] and not a["overrides"] for a in new["arms"]):
      new["baseline"] = old["baseline"]
  _write_json(path, new)


def _diff_fields(a, b, prefix=""):
  if isinstance(a, dict) and isinstance(b, dict):
    for k in a.keys() | b.keys():
      yield from _diff_fields(a.get(k), b.get(k), f"{prefix}{k}.")
  elif a != b:
    yield prefix.rstrip(".")


def estimate_minutes(per_run_s: float, runs: int, parallel: int) -> float:
  return per_run_s * math.ceil(runs / max(parallel, 1)) / 60.0


def run_sweep(sweep: Sweep, out: str, *, parallel: int = 1, max_runs: int = 0, budget_minutes: float = 0.0,
              retries: int = 1, log: Callable[[str], None] = print) -> dict:
  """Trains every (arm, seed) of `sweep` that is not finished in `out`, `parallel` at a time, then writes
  results.csv/md and plots. Returns the aggregate (see `aggregate`).

  A run whose worker dies from a signal is retried `retries` times (it resumes from its checkpoint); a run
  that fails otherwise is reported with its log, and the other runs go on. `max_runs` refuses a sweep with
  more runs to train; `budget_minutes` refuses to go on once the first run's time says the rest would not fit.
  """
  if parallel < 1:
    raise SweepError(f"--parallel={parallel}: expected 1 or more worker processes.")
  with _sweep_lock(out):
    prepare(sweep, out)
    sweep = Sweep.from_json(_read_json(os.path.join(out, SWEEP_FILE)))
    jobs, finished_s = [], []
    for arm in sweep.arms:
      for seed in sweep.seeds:
        workdir = run_dir(out, arm.name, seed)
        status = run_status(workdir)
        if status in ("finished", "diverged"):
          seconds = (_read_json(os.path.join(workdir, RUN_RESULT_FILE)) or {}).get("seconds")
          if seconds:
            finished_s.append(seconds)
          continue
        spec_path = os.path.join(workdir, RUN_SPEC_FILE)
        spec = {"arm": arm.name, "seed": seed, "config": run_config(sweep.base, arm.overrides, seed)}
        old_spec = _read_json(spec_path)
        if old_spec is not None and old_spec["config"] != spec["config"]:
          raise SweepError(f"{workdir} was started with another config; remove it to train it again.")
        _write_json(spec_path, spec)
        record = _read_json(os.path.join(workdir, RUN_RESULT_FILE)) or {}
        jobs.append(_Job(arm.name, seed, workdir, record.get("attempts", 0), record.get("seconds", 0.0)))
    total = len(sweep.arms) * len(sweep.seeds)
    log(f"Sweep {out}: {len(sweep.arms)} arms x {len(sweep.seeds)} seeds = {total} runs, {total - len(jobs)} "
        f"already finished, {len(jobs)} to train, {parallel} at a time.")
    if max_runs and len(jobs) > max_runs:
      raise SweepError(f"{len(jobs)} runs to train, more than --max_runs={max_runs}. Shrink the sweep (fewer "
                       f"--seeds or arms), or raise --max_runs; finished runs are kept and never retrained.")
    if jobs and budget_minutes and finished_s:
      _check_budget(np.mean(finished_s), len(jobs), parallel, budget_minutes, log, "finished runs' mean")
    failures = _execute(jobs, parallel, budget_minutes, bool(finished_s), retries, log,
                        os.path.abspath(os.path.join(out, CACHE_DIR)))
    table = write_results(out)
    log(f"Results: {os.path.join(out, RESULTS_MD)}")
    if failures:
      raise SweepError("Runs failed (see their logs; the same command again retries them): "
                       + "; ".join(f"{j.arm}/seed{j.seed} (exit {rc}, {j.workdir}/train.log)" for j, rc in failures))
    return table


def _check_budget(per_run_s, remaining, parallel, budget_minutes, log, source, spent_s=0.0):
  minutes = estimate_minutes(per_run_s, remaining, parallel)
  log(f"Estimate: {remaining} runs left at {per_run_s:.0f} s each ({source}), {parallel} at a time: "
      f"{minutes:.1f} min more.")
  if spent_s / 60 + minutes > budget_minutes:
    raise SweepError(
        f"Over budget: {remaining} more runs need about {minutes:.1f} min against --budget_minutes="
        f"{budget_minutes:g} ({spent_s / 60:.1f} min already spent). Shrink the sweep (fewer --seeds or arms, "
        f"a shorter --config.num_epochs), raise --parallel where cores allow, or raise --budget_minutes; "
        f"finished runs are kept.")


def _execute(jobs: list[_Job], parallel: int, budget_minutes: float, estimated: bool, retries: int, log,
             cache_dir: str):
  cores, gpus = _core_groups(parallel), _gpu_groups(parallel)
  free, pending, running, failures = list(range(parallel)), list(jobs), {}, []
  start = time.monotonic()
  try:
    while pending or running:
      while pending and free:
        slot = free.pop(0)
        running[slot] = _Worker(pending.pop(0), cores[slot], gpus[slot], cache_dir, log)
      time.sleep(0.2)
      for slot, worker in list(running.items()):
        rc = worker.poll()
        if rc is None:
          continue
        del running[slot]
        free.append(slot)
        job = worker.job
        status = run_status(job.workdir)
        _write_json(os.path.join(job.workdir, RUN_RESULT_FILE),
                    {"seconds": round(job.seconds, 2), "attempts": job.attempts, "returncode": rc, "status": status})
        if status in ("finished", "diverged"):
          log(f"done  {job.arm}/seed{job.seed}: {status} in {job.seconds:.0f} s")
          if budget_minutes and not estimated:
            estimated = True
            _check_budget(job.seconds, len(pending) + len(running), parallel, budget_minutes, log,
                          "the first run", spent_s=time.monotonic() - start)
        elif rc < 0 and job.attempts <= retries:
          log(f"{job.arm}/seed{job.seed} was killed (signal {-rc}); resuming it from its checkpoint.")
          pending.insert(0, job)
        else:
          log(f"FAILED {job.arm}/seed{job.seed} (exit {rc}); its log: {worker.log_path}")
          failures.append((job, rc))
  finally:
    for worker in running.values():  # over budget or interrupted: stop cleanly, the runs resume later
      with contextlib.suppress(ProcessLookupError):
        worker.proc.terminate()
    for worker in running.values():
      with contextlib.suppress(subprocess.TimeoutExpired):
        worker.proc.wait(timeout=30)
  return failures
