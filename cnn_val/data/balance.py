"""Class-imbalance levers: loss weights from the training split's class counts, and per-epoch resampling.

Class weights (`config.imbalance.class_weighting`), normalised so that the weighted mean over the training
set is 1 (the loss keeps its scale, and with it the learning rate's meaning):
  inverse           w_c proportional to 1 / n_c
  effective_number  w_c proportional to (1 - beta) / (1 - beta ** n_c)  (Cui et al., CVPR 2019); beta -> 0
                    gives equal weights, beta -> 1 inverse frequency; `config.imbalance.beta`, e.g. 0.999
Resampling (`config.imbalance.resampling`), a fresh seeded draw each epoch, to equal class frequencies:
  oversample   every class drawn n_max times per epoch (a class's own examples all appear, repeats drawn
               with replacement from it): an epoch is K * n_max examples
  undersample  every class drawn n_min times per epoch, without replacement: an epoch is K * n_min examples
Classes with no training example are left out of both (they cannot be drawn; `audit` reports them).
Logit adjustment (`config.imbalance.logit_adjustment`, tau; Menon et al., ICLR 2021, "Long-tail learning via
logit adjustment"): the training loss sees logits + tau * log(prior), the prior being the class frequencies the
model is trained on (uniform under resampling); predictions use the model's own logits, so the classifier
learns the balanced error's Bayes rule (tau = 1) instead of betting on the majority.
"""

from __future__ import annotations

import numpy as np

WEIGHTINGS = ("none", "inverse", "effective_number")
RESAMPLINGS = ("none", "oversample", "undersample")


def class_counts(labels: np.ndarray, num_classes: int) -> np.ndarray:
  return np.bincount(np.asarray(labels), minlength=num_classes)[:num_classes]


def class_weights(counts, mode: str, beta: float = 0.999) -> np.ndarray | None:
  """Per-class loss weights for `mode` (None for 'none'); classes without examples get weight 0."""
  if mode not in WEIGHTINGS:
    raise ValueError(f"config.imbalance.class_weighting={mode!r}: expected one of {list(WEIGHTINGS)}.")
  if mode == "none":
    return None
  counts = np.asarray(counts, np.float64)
  present = counts > 0
  if mode == "inverse":
    raw = np.where(present, 1.0 / np.maximum(counts, 1), 0.0)
  else:
    if not 0.0 <= beta < 1.0:
      raise ValueError(f"config.imbalance.beta={beta!r}: expected a number in [0, 1), e.g. 0.999.")
    raw = np.where(present, (1.0 - beta) / (1.0 - np.power(beta, np.maximum(counts, 1))), 0.0)
  return raw * counts.sum() / np.sum(raw * counts)


def logit_offsets(counts, tau: float, resampling: str = "none") -> np.ndarray | None:
  """tau * log(prior) per class (None for tau = 0): the prior of the classes as the model sees them, the
  training split's frequencies or, under `resampling`, equal; a class without examples counts as one."""
  if tau == 0:
    return None
  counts = np.maximum(np.asarray(counts, np.float64), 1.0)
  if resampling != "none":
    counts = np.ones_like(counts)
  return tau * np.log(counts / counts.sum())


def epoch_size(counts, mode: str) -> int:
  """Examples per epoch under `mode`."""
  counts = np.asarray(counts)
  present = counts[counts > 0]
  if mode == "none":
    return int(counts.sum())
  if mode == "oversample":
    return int(len(present) * present.max())
  if mode == "undersample":
    return int(len(present) * present.min())
  raise ValueError(f"config.imbalance.resampling={mode!r}: expected one of {list(RESAMPLINGS)}.")


def epoch_order(labels: np.ndarray, num_classes: int, mode: str, *, seed: int, epoch: int) -> np.ndarray:
  """Indices into the training split for one epoch, shuffled; depends only on (labels, mode, seed, epoch)."""
  rng = np.random.default_rng([seed, epoch])
  if mode == "none":
    return rng.permutation(len(labels))
  counts = class_counts(labels, num_classes)
  per_class = epoch_size(counts, mode) // max(int((counts > 0).sum()), 1)
  parts = []
  for c in np.flatnonzero(counts):
    members = np.flatnonzero(labels == c)
    if mode == "undersample":
      parts.append(rng.choice(members, per_class, replace=False))
    else:  # every member once, the rest of the quota drawn with replacement
      parts.append(np.concatenate([members, rng.choice(members, per_class - len(members), replace=True)]))
  return rng.permutation(np.concatenate(parts))
