"""What the doctor's calibration benchmarks (pixel_reference.py, still_learning.py) share: the run directories that
globs match, grouped by sweep arm, and the ranges and counts a table row shows."""

import glob
import os
import re


def grouped_runs(patterns, keep) -> dict[str, list[str]]:
  """{group: [run directory, ...]} for the directories the globs match and `keep` accepts: a sweep's seeds together
  (.../<arm>/seed<k>), any other run on its own."""
  groups = {}
  for workdir in sorted({w.rstrip("/") for pattern in patterns for w in glob.glob(pattern) if keep(w)}):
    group = os.path.dirname(workdir) if re.fullmatch(r"seed\d+", os.path.basename(workdir)) else workdir
    groups.setdefault(group, []).append(workdir)
  return groups


def value_range(values, fmt: str, sep: str = "-") -> str:
  """'lo{sep}hi' of the values that are not None, formatted (one value where they agree); '-' for none."""
  values = [v for v in values if v is not None]
  return "-" if not values else sep.join(dict.fromkeys((f"{min(values):{fmt}}", f"{max(values):{fmt}}")))


def tally(values) -> str:
  """'a x2; b x1': each distinct value and how often it occurs."""
  return "; ".join(f"{v} x{values.count(v)}" for v in sorted(set(values)))
