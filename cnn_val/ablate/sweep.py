"""What a sweep is: a base config, arms (config overrides) and seeds; the arms parsed from flags, grids and
sweep files; each run's config; and a run directory's status and numbers, read from its files alone."""

from __future__ import annotations

import ast
import dataclasses
import difflib
import itertools
import os
import re
from typing import Any, Mapping, Sequence

from cnn_val import config_fields, rundir

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


class SweepIncomplete(SweepError):
  """The sweep stopped before every run finished (over budget, or runs failed); what finished is kept and
  aggregated, and the same command again resumes."""


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
  check: bool = dataclasses.field(default=True, repr=False, compare=False)  # types and values (check_arm)

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
    self.arms = [Arm(a.name, {strip_prefix(k): _jsonable(v) for k, v in a.overrides.items()}) for a in self.arms]
    self.seeds = [int(s) for s in self.seeds]
    if self.baseline is None:
      self.baseline = next((a.name for a in self.arms if not a.overrides), self.arms[0].name)
    elif self.baseline not in names:
      raise SweepError(f"The baseline arm {self.baseline!r} is not one of the arms {names}.")
    for arm in self.arms:  # unknown fields, wrong types and invalid values fail now, naming the arm and field
      if self.check:
        check_arm(self.base, arm, self.seeds[0])
      else:
        run_config(self.base, arm.overrides, self.seeds[0])

  def to_json(self) -> dict:
    return {"base": self.base, "arms": [{"name": a.name, "overrides": dict(a.overrides)} for a in self.arms],
            "seeds": list(self.seeds), "baseline": self.baseline}

  @classmethod
  def from_json(cls, d: dict) -> "Sweep":
    """A sweep as sweep.json recorded it (its arms were checked when it was written)."""
    return cls(d["base"], [Arm(a["name"], a["overrides"]) for a in d["arms"]], d["seeds"], d.get("baseline"),
               check=False)


# ---------------------------------------------------------------------------------------------------------
# Configs: overrides on plain dicts, and back to a locked ConfigDict in the worker.

def strip_prefix(field: str) -> str:
  """'config.optim.learning_rate' -> 'optim.learning_rate'."""
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
    out[strip_prefix(field.strip())] = parse_value(value.strip())
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
    axes.append([(strip_prefix(field.strip()), parse_value(v.strip())) for v in values.split(";")])
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
  try:
    with open(path) as f:
      exec(compile(f.read(), path, "exec"), namespace)  # pylint: disable=exec-used  (configs are code too)
    if "get_sweep" not in namespace:
      raise SweepError(f"--sweep={path} defines no get_sweep(); it should return a list of override dicts.")
    entries = list(namespace["get_sweep"]())
  except SweepError:
    raise
  except Exception as e:  # pylint: disable=broad-except  (the user's file: say which, and what it raised)
    raise SweepError(f"--sweep={path} could not be read: {type(e).__name__}: {e}.") from None
  arms = []
  for i, entry in enumerate(entries):
    if not isinstance(entry, dict):
      raise SweepError(f"--sweep={path}: get_sweep()[{i}] is a {type(entry).__name__}; expected a dict of "
                       f"overrides such as {{'model.dropout_rate': 0.3}}.")
    entry = dict(entry)
    name = entry.pop("name", None) or ("+".join(f"{k.split('.')[-1]}={_dir_text(v)}" for k, v in entry.items())
                                       or f"arm{i}")
    arms.append(Arm(name, entry))
  return arms


def run_config(base: dict, overrides: Mapping[str, Any], seed: int) -> dict:
  """The config dict of one run: `base` with `overrides` applied and `seed` set. Every field must exist (a
  base from before a field existed has it at its neutral value: config_fields.with_fields_added_later)."""
  config = config_fields.with_fields_added_later(base)
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


def check_arm(base: dict, arm: Arm, seed: int) -> None:
  """An arm's overrides name existing fields, keep their types (an int where a float is expected is fine),
  and give a config that config_check accepts: a bad arm fails before any run starts."""
  config = run_config(base, arm.overrides, seed)
  base = config_fields.with_fields_added_later(base)
  for field, value in arm.overrides.items():
    current = base
    for part in field.split("."):
      current = current[part]
    if current is None or value is None:
      continue  # a placeholder (None) takes any type; None restores a field's default
    numbers = (int, float)
    same = (isinstance(value, bool) == isinstance(current, bool)) and (
        isinstance(value, type(current)) or (isinstance(current, float) and isinstance(value, numbers))
        or (isinstance(current, list) and isinstance(value, (list, tuple))))
    if not same:
      raise SweepError(f"Arm {arm.name!r}: config.{field}={value!r} is a {type(value).__name__}, but the field "
                       f"holds a {type(current).__name__} ({current!r}). Write the value as a Python literal "
                       f"of that type (strings need no quotes; tuples as (a, b)).")
  from cnn_val import config_check  # pylint: disable=import-outside-toplevel  (JAX, the model zoo)
  try:
    config_check.validate(config_from_dict(config))
  except ValueError as e:
    raise SweepError(f"Arm {arm.name!r}: {e}") from None


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


def stored_config(workdir: str):
  """The locked config a run directory was trained with (its config.json, `config_from_dict`); a
  FileNotFoundError that names the directory where it holds none."""
  stored = rundir.read_json(workdir, rundir.CONFIG_FILE)
  if stored is None:
    raise FileNotFoundError(f"{workdir} has no {rundir.CONFIG_FILE}: it is not a cnn_val run directory.")
  return config_from_dict(stored)


# ---------------------------------------------------------------------------------------------------------
# Run directories.

def run_dir(out: str, arm: str, seed: int) -> str:
  return os.path.join(out, "runs", arm, f"seed{seed}")


def run_status(workdir: str) -> str:
  """'finished' (every epoch, or stopped early by `early_stopping_patience`: an outcome too), 'diverged' (stopped on
  NaN/Inf: an outcome, not a failure), 'partial' or 'missing'."""
  if os.path.exists(os.path.join(workdir, rundir.DIVERGED_FILE)):
    return "diverged"
  if not os.path.isdir(workdir):
    return "missing"
  config = rundir.read_json(workdir, rundir.CONFIG_FILE)
  rows = rundir.read_metrics(workdir)
  if config is None or not rows:
    return "partial"
  last = rows[-1].get("epoch")
  stopped = rundir.read_json(workdir, rundir.EARLY_STOP_FILE)  # written after its last evaluation's row
  if last == config.get("num_epochs") or (isinstance(stopped, dict) and last == stopped.get("epoch")):
    return "finished"
  return "partial"


def epochs_trained(workdir: str) -> int | None:
  """The epoch of a run's last evaluation (every run evaluates its last epoch), or None before its first."""
  rows = rundir.read_metrics(workdir)
  last = rows[-1].get("epoch") if rows else None
  return last if isinstance(last, int) and last > 0 else None


def seconds_per_epoch(workdir: str) -> float | None:
  """A finished run's wall time an epoch, from ablate.json: its seconds over the epochs they paid for (`epochs`
  there: a population's members share the time its longest member set), else over its own epochs; None where it
  trained none (a run that diverged before its first evaluation says nothing of what a whole one costs)."""
  record = rundir.read_json(workdir, RUN_RESULT_FILE) or {}
  epochs = record.get("epochs") or epochs_trained(workdir)
  return record["seconds"] / epochs if record.get("seconds") and epochs else None


def expected_epochs(config: dict, finished: list[str]) -> float:
  """The epochs a run of `config` is expected to train: its num_epochs, or, where early stopping may end it, that
  times the mean share of their budgets the `finished` runs with early stopping trained (one patience stops a
  sweep's runs alike more often than not; a sweep whose runs stop at epoch 8 of 100 must not be estimated at 100)."""
  epochs = float(config.get("num_epochs") or 1)
  if not config.get("early_stopping_patience"):
    return epochs
  shares = []
  for workdir in finished:
    run = rundir.read_json(workdir, rundir.CONFIG_FILE) or {}
    trained = epochs_trained(workdir)
    if run.get("early_stopping_patience") and run.get("num_epochs") and trained:
      shares.append(min(1.0, trained / run["num_epochs"]))
  return epochs * (sum(shares) / len(shares) if shares else 1.0)


def _majority_accuracy(workdir: str):
  """The majority-class accuracy on validation: from the pre-flight checks, else from the audit's counts."""
  checks = (rundir.read_json(workdir, rundir.PREFLIGHT_FILE) or {}).get("checks", [])
  value = next((c.get("value") for c in checks if c.get("name") == "majority_class"), None)
  if value is None:
    counts = ((rundir.read_json(workdir, rundir.AUDIT_FILE) or {}).get("splits", {}).get("validation", {})
              .get("class_counts"))
    value = max(counts) / sum(counts) if counts and sum(counts) else None
  return value


def read_run(workdir: str) -> dict:
  """One run's numbers, from its files only. A diverged run counts at the majority-class accuracy: the model
  it ends with is not usable, whatever it scored before it blew up (its best evaluation is kept as best)."""
  rows = rundir.read_metrics(workdir)
  status = run_status(workdir)
  record = rundir.read_json(workdir, RUN_RESULT_FILE) or {}
  accuracies = [r["val_accuracy"] for r in rows if r.get("val_accuracy") is not None]
  last = rows[-1] if rows else {}
  final = _majority_accuracy(workdir) if status == "diverged" else last.get("val_accuracy")
  test = None if status == "diverged" else last.get("test_accuracy")
  return {"status": status, "seconds": record.get("seconds"),
          "curve": [(r["epoch"], r["val_accuracy"]) for r in rows if r.get("val_accuracy") is not None],
          "final_val_accuracy": final, "best_val_accuracy": max(accuracies, default=final), "test_accuracy": test,
          "val_minus_test_accuracy": (final - test) if test is not None and final is not None else None}
