"""`load_data(config)`: a config's splits read once into host memory as numpy, after its fault scenario and
the leakage fix. Used by training, the LR range test and the doctor's re-audit (no training loop needed)."""

from __future__ import annotations

import dataclasses
import json

from absl import logging
import numpy as np

from cnn_val import audit, rundir
from cnn_val.data import pipeline, scenarios, sources


def _listing(path: str, field: str, keys: tuple[str, ...], expected: str, hint: str = "",
             file_hint: str = "the doctor's label_issues.json of a run with these data") -> list:
  """The values under `keys` of the JSON file a config.data field names (the doctor's label_issues.json, or
  any such file), or an error naming the field, the file and what was expected."""
  try:
    listing = json.loads(rundir.path(path).read_text())
    return [listing[key] for key in keys]
  except FileNotFoundError:
    example = ", ".join(f'"{key}": [...]' for key in keys)
    raise FileNotFoundError(f"{field}={path!r}: no such file. It is {file_hint} (or any JSON file "
                            f"{{{example}}}).") from None
  except (json.JSONDecodeError, KeyError, TypeError) as e:
    raise ValueError(f"{field}={path!r}: expected {expected} ({type(e).__name__}: {e}){hint}.") from None


def _is_index(x, bound: int) -> bool:
  return isinstance(x, int) and not isinstance(x, bool) and 0 <= x < bound


def _check_indices(indices, num_train: int, field: str, path: str, *, distinct: bool) -> None:
  if not all(_is_index(i, num_train) for i in indices) or (distinct and len(set(indices)) != len(indices)):
    what = "a distinct integer" if distinct else "an integer"
    raise ValueError(f"{field}={path!r}: every index must be {what} in [0, {num_train}), the training split "
                     f"as loaded; these data have another split (another scenario or dataset?).")


def excluded_indices(path: str, num_train: int) -> np.ndarray:
  """The training indices `config.data.exclude_train_examples` names: a JSON file {"indices": [...]} (the
  doctor's label_issues.json), indices into the training split as loaded (after the scenario)."""
  field = "config.data.exclude_train_examples"
  [indices] = _listing(path, field, ("indices",), 'a JSON object with a list of training indices under "indices"')
  _check_indices(indices, num_train, field, path, distinct=False)
  return np.asarray(sorted(set(indices)), int)


def relabelled(path: str, num_train: int, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
  """(indices, labels) that `config.data.relabel_train_examples` names: a JSON file {"indices": [...],
  "labels": [...]} (the doctor's label_issues.json: each flagged example and the class the model sees)."""
  field = "config.data.relabel_train_examples"
  indices, labels = _listing(
      path, field, ("indices", "labels"), 'a JSON object with lists "indices" and "labels" of the same length',
      "; a label_issues.json from before labels were written: run `python -m cnn_val.doctor --workdir=RUN` again")
  if not isinstance(indices, list) or not isinstance(labels, list) or len(indices) != len(labels):
    raise ValueError(f"{field}={path!r}: \"indices\" and \"labels\" must be lists of the same length.")
  _check_indices(indices, num_train, field, path, distinct=True)
  if not all(_is_index(c, num_classes) for c in labels):
    raise ValueError(f"{field}={path!r}: every label must be a class index in [0, {num_classes}).")
  return np.asarray(indices, int), np.asarray(labels, int)


def noise_transition(path: str, num_classes: int) -> np.ndarray:
  """The [K, K] matrix `config.data.noise_transition` names: a JSON file {"transition": [[...], ...]} whose row i
  holds P(given label j | true class i) (the doctor's noise_transition.json, cleanlab's estimate), checked
  and each row renormalised to sum to 1."""
  field = "config.data.noise_transition"
  [rows] = _listing(path, field, ("transition",),
                    f'a JSON object with a {num_classes} x {num_classes} list of lists under "transition"',
                    "; the doctor writes one as noise_transition.json beside label_issues.json",
                    file_hint="the doctor's noise_transition.json of a run with these data")
  try:
    matrix = np.asarray(rows, np.float64)
  except (TypeError, ValueError):
    matrix = np.zeros(0)
  if matrix.shape != (num_classes, num_classes) or not np.isfinite(matrix).all() or (matrix < 0).any():
    raise ValueError(f"{field}={path!r}: expected a {num_classes} x {num_classes} matrix (these data have "
                     f"{num_classes} classes) of probabilities >= 0 under \"transition\", row i being "
                     f"P(given label j | true class i); got {matrix.shape if matrix.ndim else rows!r}.")
  sums = matrix.sum(axis=1)
  if not np.allclose(sums, 1.0, atol=1e-2):
    raise ValueError(f"{field}={path!r}: row i must hold P(given label j | true class i) and sum to 1; rows "
                     f"{np.flatnonzero(~np.isclose(sums, 1.0, atol=1e-2)).tolist()} sum to "
                     f"{np.round(sums[~np.isclose(sums, 1.0, atol=1e-2)], 3).tolist()}.")
  matrix = matrix / sums[:, None]
  off = matrix - np.diag(np.diag(matrix))
  bad = np.flatnonzero(np.diag(matrix) <= off.max(axis=1))
  if len(bad):
    raise ValueError(f"{field}={path!r}: the given label must be the most likely one for each true class (the "
                     f"diagonal the largest entry of its row), or no loss can tell the classes apart; not so "
                     f"for classes {bad.tolist()}. Is the matrix transposed (rows: true class, columns: given "
                     f"label)?")
  return matrix


def load_data(config):
  """The splits as numpy arrays ({'train', 'validation', optionally 'test'}), after the fault scenario (if
  any), and the dataset's description (`sources.Splits`, whose validation and test are those arrays)."""
  splits = sources.load_splits(config.data)
  arrays = {"train": pipeline.to_arrays(splits.train, splits.num_classes, "train"),
            "validation": pipeline.to_arrays(splits.validation, splits.num_classes, "validation")}
  if splits.test is not None:
    arrays["test"] = pipeline.to_arrays(splits.test, splits.num_classes, "test")
  scenario = config.data.scenario
  scenarios.validate(scenario, splits.num_classes)
  if scenarios.active(scenario):
    arrays = scenarios.apply(scenario, arrays, splits.num_classes)
    logging.info("Fault scenario %s: %d training examples after it.",
                 {k: v for k, v in scenario.items() if k != "seed"}, len(arrays["train"]["label"]))
  if config.data.remove_cross_split_duplicates:  # the fix for leakage: train never holds an eval image
    held_out = {h for name in arrays if name != "train" for h in audit.exact_hashes(arrays[name]["image"])}
    keep = np.array([h not in held_out for h in audit.exact_hashes(arrays["train"]["image"])], bool)
    exact = int((~keep).sum())
    for name in (n for n in arrays if n != "train"):  # near duplicates too (audit.NEAR_RMS, shift-tolerant)
      index, dist = audit.nearest_same_class(arrays["train"]["image"], arrays["train"]["label"],
                                             arrays[name]["image"], arrays[name]["label"])
      keep[index[dist <= audit.NEAR_RMS]] = False
    arrays["train"] = {k: v[keep] for k, v in arrays["train"].items()}
    logging.info("Removed %d training examples that duplicate validation or test images (%d exact, %d near).",
                 int((~keep).sum()), exact, int((~keep).sum()) - exact)
  if config.data.get("relabel_train_examples"):  # a label_noise fix: the flagged examples get the model's class
    index, new = relabelled(config.data.relabel_train_examples, len(arrays["train"]["label"]), splits.num_classes)
    labels = np.array(arrays["train"]["label"], copy=True)
    changed = int((labels[index] != new).sum())
    labels[index] = new.astype(labels.dtype)
    arrays["train"] = {**arrays["train"], "label": labels}
    logging.info("Relabelled %d training examples (%d changed) listed in %s.", len(index), changed,
                 config.data.relabel_train_examples)
  if config.data.get("exclude_train_examples"):  # the label_noise fix: train without the flagged examples
    drop = excluded_indices(config.data.exclude_train_examples, len(arrays["train"]["label"]))
    keep = np.ones(len(arrays["train"]["label"]), bool)
    keep[drop] = False
    arrays["train"] = {k: v[keep] for k, v in arrays["train"].items()}
    logging.info("Excluded %d training examples listed in %s.", len(drop), config.data.exclude_train_examples)
  fraction = config.data.get("train_fraction", 1.0)
  if fraction < 1.0:  # the doctor's learning curve: the first share of the training split, nested
    total = len(arrays["train"]["label"])
    keep = int(round(fraction * total))
    if keep < 1:
      raise ValueError(f"config.data.train_fraction={fraction} keeps no example of the {total} training "
                       f"examples; use a larger fraction.")
    arrays["train"] = {k: v[:keep] for k, v in arrays["train"].items()}
    logging.info("Kept the first %d of %d training examples (config.data.train_fraction=%g).", keep, total,
                 fraction)
  splits = dataclasses.replace(
      splits, num_train=len(arrays["train"]["label"]), train=None,
      image_shape=tuple(int(s) for s in arrays["train"]["image"].shape[1:]),  # a scenario may colour them
      validation=arrays["validation"], test=arrays.get("test"))
  return splits, arrays
