"""`Splits`: a dataset's train, validation and test splits with their description (sizes, classes, shape)."""

from __future__ import annotations

import dataclasses

import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class Splits:
  """The three splits as unbatched tf.data datasets of {'image': uint8 [H,W,C], 'label': int32}."""
  train: tf.data.Dataset
  validation: tf.data.Dataset
  test: tf.data.Dataset | None
  num_train: int
  num_validation: int
  num_test: int
  num_classes: int
  image_shape: tuple[int, int, int]
  class_names: tuple[str, ...]
