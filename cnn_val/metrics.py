"""Classification metrics derived from a confusion matrix (rows: true class, columns: predicted class).

The eval step sums the confusion matrix over masked (padding-free) examples and over devices, so every
number here is exact for the whole split, however it was batched or sharded. Classes absent from the split
(no true example) have recall NaN and are left out of the balanced accuracy and macro-F1; a class never
predicted has precision 0 when it has examples (NaN when it has none).
"""

from __future__ import annotations

import numpy as np


def _nan_list(values) -> list:
  return [None if np.isnan(v) else float(v) for v in values]


def confusion_rates(confusion) -> np.ndarray:
  """The confusion matrix as fractions of each true class (rows sum to 1; a class without examples: 0)."""
  c = np.asarray(confusion, np.float64)
  return c / np.maximum(c.sum(axis=1, keepdims=True), 1)


def from_confusion(confusion) -> dict:
  """Per-class recall and precision, balanced accuracy, macro-F1 and the predicted-class histogram."""
  confusion = np.asarray(confusion, np.int64)
  true_counts = confusion.sum(axis=1)
  pred_counts = confusion.sum(axis=0)
  hits = np.diag(confusion).astype(np.float64)
  present = true_counts > 0
  with np.errstate(invalid="ignore", divide="ignore"):
    recall = np.where(present, hits / np.maximum(true_counts, 1), np.nan)
    precision = np.where(pred_counts > 0, hits / np.maximum(pred_counts, 1), np.where(present, 0.0, np.nan))
    f1 = np.where(hits > 0, 2 * precision * recall / (precision + recall), np.where(present, 0.0, np.nan))
  return {
      "per_class_recall": _nan_list(recall),
      "per_class_precision": _nan_list(precision),
      "balanced_accuracy": float(np.nanmean(recall)) if present.any() else None,
      "macro_f1": float(np.nanmean(f1[present])) if present.any() else None,
      "pred_histogram": [int(c) for c in pred_counts],
  }
