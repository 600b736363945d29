"""Nearest neighbours on the pixels: the doctor's reference classifier, and the augmentation check's instrument.

A 1-nearest-neighbour classifier on the raw pixels learns nothing: it labels an image by the training image it
looks most like. On Fashion-MNIST it errs on 14.8% of the validation images, on 3,000 MNIST digits on 6.2%.
A CNN that learns shapes errs far less (the seed CNN's best validation error at the faults' budget: 0.56-0.57x
the lookup's on Fashion-MNIST, 0.29-0.37x on the digits), so a CNN that does not beat the lookup clearly has
not learned what its data hold: the doctor's `pixel_reference` (rules.py) reads `reference`, which the audit
writes into audit.json. `augment_check.py` uses the same neighbours to ask whether an augmentation changes
the labels.

Images larger than MAX_SIDE pixels a side are block-averaged down first (what the shapes are, not their detail);
the samples are drawn with a fixed seed, so every run of a sweep gets the same result.
"""

from __future__ import annotations

import numpy as np

MAX_SIDE = 32
SAMPLE_SEED = 0
# The reference's samples. The lookup improves with every training image it may take (Fashion-MNIST, 5,000
# validation images: 16.4% wrong with 20,000 of them, 14.8% with all 54,000), so it takes all of them up to
# REFERENCE_TRAIN, as the CNN does (2.7 s on Fashion-MNIST on this project's 2-core machine).
REFERENCE_TRAIN = 60_000
REFERENCE_VALIDATION = 5_000
_CHUNK = 500


def downsample(images: np.ndarray, indices: np.ndarray | None = None) -> tuple[np.ndarray, int]:
  """Float images on [0, 1] (uint8 ones divided by 255; float ones, as the training step also takes them, kept)
  of `images[indices]` (all of them by default), block-averaged by the smallest integer factor that brings the
  larger side to <= MAX_SIDE (never below one pixel on the shorter side; the remainder cropped), gathered and
  converted a chunk at a time so that no copy of the images exists at full size; and the factor."""
  images = np.asarray(images)
  indices = np.arange(len(images)) if indices is None else np.asarray(indices)
  h, w, c = images.shape[1:]
  factor = max(1, min(-(-max(h, w) // MAX_SIDE), min(h, w)))
  h2, w2 = h // factor, w // factor
  scale = 1.0 / 255.0 if images.dtype == np.uint8 else 1.0
  out = np.empty((len(indices), h2, w2, c), np.float32)
  for i in range(0, len(indices), _CHUNK):
    block = images[indices[i:i + _CHUNK], :h2 * factor, :w2 * factor].reshape(-1, h2, factor, w2, factor, c)
    out[i:i + _CHUNK] = block.mean(axis=(2, 4), dtype=np.float32) * scale
  return out, factor


def nearest_labels(reference: np.ndarray, labels: np.ndarray, queries: np.ndarray,
                   exclude: np.ndarray | None = None) -> np.ndarray:
  """The label of each query's nearest reference image (squared Euclidean distance on the pixels); `exclude`
  ([queries, k] reference indices, -1 for none) the images a query may not take (itself and its own copy)."""
  ref = reference.reshape(len(reference), -1)
  norms = np.einsum("ij,ij->i", ref, ref)
  out = np.empty(len(queries), labels.dtype)
  for i in range(0, len(queries), _CHUNK):
    q = queries[i:i + _CHUNK].reshape(-1, ref.shape[1])
    distances = norms[None, :] - 2.0 * q @ ref.T
    if exclude is not None:
      for column in exclude[i:i + _CHUNK].T:
        rows = np.flatnonzero(column >= 0)
        distances[rows, column[rows]] = np.inf
    out[i:i + _CHUNK] = labels[np.argmin(distances, axis=1)]
  return out


def sample(count: int, limit: int, rng: np.random.Generator) -> np.ndarray:
  """Sorted indices of `limit` of `count` items drawn without replacement (all of them when count <= limit)."""
  return np.sort(rng.choice(count, limit, replace=False)) if count > limit else np.arange(count)


def error_ratio(accuracy: float | None, reference: dict | None) -> float | None:
  """A model's error (1 - `accuracy`) as a multiple of the lookup's (`reference`, as `reference` returns it); None
  without an accuracy or a reference, or where the lookup makes no error."""
  if accuracy is None or not reference or reference["accuracy"] >= 1:
    return None
  return (1.0 - accuracy) / (1.0 - reference["accuracy"])


def reference(train: dict, validation: dict, num_classes: int, *, max_train: int = REFERENCE_TRAIN,
              max_validation: int = REFERENCE_VALIDATION) -> dict | None:
  """The 1-nearest-neighbour classifier's accuracy on (a sample of) the validation images, with (a sample of) the
  training images as its reference; None where a split is empty. `train`, `validation`: {'image': [N, H, W, C]
  uint8 (or floats on [0, 1]), 'label': int [N]}."""
  if not len(train["label"]) or not len(validation["label"]):
    return None
  rng = np.random.default_rng(SAMPLE_SEED)
  t_idx = sample(len(train["label"]), max_train, rng)
  v_idx = sample(len(validation["label"]), max_validation, rng)
  x_train, _ = downsample(train["image"], t_idx)
  x_val, _ = downsample(validation["image"], v_idx)
  y_val = np.asarray(validation["label"])[v_idx].astype(np.int64)
  right = nearest_labels(x_train, np.asarray(train["label"])[t_idx].astype(np.int64), x_val) == y_val
  in_range = (y_val >= 0) & (y_val < num_classes)
  per_class = np.bincount(y_val[in_range], minlength=num_classes)
  recall = np.bincount(y_val[in_range & right], minlength=num_classes) / np.maximum(per_class, 1)
  return {"method": "1-nearest neighbour on the pixels (squared Euclidean distance), the training sample as its "
                    "reference, labelling the validation sample",
          "train_examples": int(len(t_idx)), "validation_examples": int(len(v_idx)),
          "image_side": [int(d) for d in x_train.shape[1:3]], "errors": int(np.sum(~right)),
          "accuracy": float(np.mean(right)),
          "per_class_recall": [float(r) if c else None for r, c in zip(recall, per_class)]}
