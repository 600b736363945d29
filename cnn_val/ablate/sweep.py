"""What a sweep is: a base config, arms (config overrides) and seeds; the arms parsed from flags, grids and
sweep files; each run's config; and a run directory's status and numbers, read from its files alone."""

from __future__ import annotations

import ast
import contextlib
import copy
import dataclasses
import difflib
import itertools
import json
import os
import re
from typing import Any, Mapping, Sequence

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


def read_json(path: str):
  try:
    with open(path) as f:
      return json.load(f)
  except FileNotFoundError:
    return None


def write_json(path: str, obj) -> None:
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
  config = read_json(os.path.join(workdir, "config.json"))
  rows = _read_rows(workdir)
  if config is None or not rows:
    return "partial" if os.path.isdir(workdir) else "missing"
  return "finished" if rows[-1].get("epoch") == config.get("num_epochs") else "partial"


def read_run(workdir: str) -> dict:
  """One run's numbers, from its files only."""
  rows = _read_rows(workdir)
  status = run_status(workdir)
  record = read_json(os.path.join(workdir, RUN_RESULT_FILE)) or {}
  out = {"status": status, "seconds": record.get("seconds"), "curve": [(r["epoch"], r["val_accuracy"]) for r in rows
                                                                        if r.get("val_accuracy") is not None]}
  last = rows[-1] if rows else {}
  final = last.get("val_accuracy")
  if status == "diverged" and final is None:
    # A run that blew up before its first evaluation predicts no better than the majority class.
    pre = read_json(os.path.join(workdir, "preflight.json")) or {}
    final = next((c.get("value") for c in pre.get("checks", []) if c.get("name") == "majority_class"), None)
  best = max((r["val_accuracy"] for r in rows if r.get("val_accuracy") is not None), default=final)
  test = last.get("test_accuracy")
  out.update(final_val_accuracy=final, best_val_accuracy=best, test_accuracy=test,
             val_minus_test_accuracy=(last["val_accuracy"] - test) if test is not None and
             last.get("val_accuracy") is not None else None)
  return out
