"""What the doctor's rules read: a run directory's files, with the quantities the rules share computed once.

Only files (config.json, metrics.jsonl, audit.json, augment_check.json, preflight.json, lr_find.json, diverged.json,
train_predictions.npz): a run made anywhere, by any version that wrote them, can be read.
"""

from __future__ import annotations

import functools
import math

from absl import logging
import ml_collections
import numpy as np

from cnn_val import augment as augment_lib
from cnn_val import metrics, rundir
from cnn_val.doctor.label_check import flagged_in, label_issues, true_class_given_label

RATIO_WINDOW_STEPS = 1500  # steps over which the update/parameter ratio is compared between runs


def finite(value) -> bool:
  """Whether a value read from a run file is a finite number (JSON holds null for Inf/NaN; not a bool)."""
  return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def accuracy_standard_error(accuracy: float, n: int) -> float:
  """One evaluation's standard error of an accuracy measured on n examples (binomial, Agresti-Coull: near 100% the
  plain estimate reads no noise)."""
  p = (accuracy * n + 2) / (n + 4)
  return math.sqrt(p * (1 - p) / (n + 4))


class Run:
  """A run directory as the rules read it, with derived quantities computed once."""

  def __init__(self, workdir: str):
    self.workdir = workdir
    self.config = rundir.read_json(workdir, rundir.CONFIG_FILE) or {}
    self.rows = rundir.read_metrics(workdir)
    self.audit = rundir.read_json(workdir, rundir.AUDIT_FILE)
    self.augment_check = rundir.read_json(workdir, rundir.AUGMENT_CHECK_FILE)
    self.preflight = rundir.read_json(workdir, rundir.PREFLIGHT_FILE)
    # An LR range test measured for another config is not this run's evidence (the report says which fields).
    self.lr_find = rundir.read_lr_find(workdir, self.config)[0]
    self.diverged = rundir.read_json(workdir, rundir.DIVERGED_FILE)
    rows = self.rows
    self.num_classes = (self.audit or {}).get("num_classes") or (
        len(rows[-1]["val_per_class_recall"]) if rows else 0)
    if not rows:
      return
    self.last = rows[-1]
    self.best = max(rows, key=lambda r: r["val_accuracy"])
    third = max(1, len(rows) // 3)
    self.early, self.late = rows[:-third], rows[-third:]
    self.train_acc, self.val_acc = self.last["train_accuracy"], self.last["val_accuracy"]
    self.val_losses = [r["val_loss"] for r in rows]
    self.train_losses = [r["train_loss"] for r in rows]
    before = self.early[-1]["train_loss"] if self.early else rows[0]["train_loss"]
    self.train_loss_fall = (before - self.last["train_loss"]) / max(before, 1e-12)
    best_early = max((r["val_accuracy"] for r in self.early), default=rows[0]["val_accuracy"])
    self.late_gain = max(r["val_accuracy"] for r in self.late) - best_early
    self.early_update_ratio, self.ratio_steps = self._early_update_ratio()

  def _early_update_ratio(self):
    """(mean update/parameter ratio over the first RATIO_WINDOW_STEPS steps (whole epochs), the steps it
    covers), so that runs with short and long epochs are compared over the same stretch of training (the
    ratio is largest in the first steps: a run shorter than the window reads high); (None, 0) when the run
    did not log it."""
    steps_per_epoch = self.rows[0]["step"] / max(self.rows[0]["epoch"], 1)
    ratios = []
    for row in self.rows:
      if row.get("update_ratio") is None:
        return None, 0
      ratios.append(row["update_ratio"])
      if len(ratios) * steps_per_epoch >= RATIO_WINDOW_STEPS:
        break
    return float(np.mean(ratios)), int(round(len(ratios) * steps_per_epoch))

  @functools.cached_property
  def label_issues(self) -> dict | None:
    """The likely-wrong training labels (cleanlab on train_predictions.npz; label_check.py), or None."""
    return label_issues(self.workdir) if self.workdir else None

  @functools.cached_property
  def label_sources(self) -> np.ndarray | None:
    """Where each training label's examples come from, [K, K] with row j = P(true class i | given label j),
    confident learning's estimate from the run's training predictions (`label_check.true_class_given_label`), or
    None without them."""
    result = flagged_in(self.workdir) if self.workdir else None
    if result is None or isinstance(result, str):
      return None
    probs, labels = result[0], result[1]
    try:
      return true_class_given_label(labels, probs)
    except (ValueError, IndexError, ZeroDivisionError, FloatingPointError) as e:  # an estimate cleanlab cannot make
      logging.warning("Confident learning could not estimate the label noise from %s's training predictions (%s); "
                      "the shortcut rule reads the class differences as they are.", self.workdir, e)
      return None

  @classmethod
  def from_config(cls, config: dict) -> "Run":
    """A view of a config alone (no run directory): for `get` on a config dict."""
    run = cls.__new__(cls)
    run.workdir, run.config, run.rows = None, config, []
    return run

  def get(self, path: str, default=None):
    value = self.config
    for part in path.split("."):
      if not isinstance(value, dict) or part not in value:
        return default
      value = value[part]
    return value

  @property
  def augment(self) -> augment_lib.Augment:
    """The run's augmentation as training resolved it (preset and explicit fields)."""
    return augment_lib.from_config(ml_collections.ConfigDict(self.get("augment", {}) or {}))

  def augmentation_on(self) -> bool:
    return self.augment.random

  def trained_all_epochs(self) -> bool:
    """Whether the run trained all its epochs (config.json's num_epochs; a run whose config does not say counts): not
    interrupted (it would be resumed) nor stopped early (early_stopped.json: it had stopped gaining)."""
    epochs = self.get("num_epochs")
    return (bool(self.rows) and (not epochs or self.last["epoch"] >= epochs)
            and rundir.read_json(self.workdir, rundir.EARLY_STOP_FILE) is None)

  def learned(self) -> bool:
    """The model fits its training data better than a uniform guess (ln K): generalisation rules apply."""
    return bool(self.rows) and self.num_classes > 1 and self.last["train_loss"] < math.log(self.num_classes)

  def confused_pairs(self, min_rate: float) -> list[tuple[int, int, float]]:
    """Class pairs mistaken for each other both ways at >= min_rate of their examples."""
    confusion = next((r["val_confusion"] for r in reversed(self.rows) if "val_confusion" in r), None)
    if confusion is None:
      return []
    rates = metrics.confusion_rates(confusion)
    k = len(rates)
    return [(a, b, float(min(rates[a, b], rates[b, a]))) for a in range(k) for b in range(a + 1, k)
            if min(rates[a, b], rates[b, a]) >= min_rate]

  def split_count(self, split: str) -> int | None:
    """The examples of `split` ('train', 'validation', 'test') as the run used them (audit.json), or None."""
    return ((((self.audit or {}).get("splits") or {}).get(split)) or {}).get("count")

  def class_name(self, index: int) -> str:
    """The audit's name of class `index`, or the index itself."""
    names = (self.audit or {}).get("class_names") or []
    return names[index] if index < len(names) else str(index)
