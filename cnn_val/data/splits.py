"""`Splits`: a dataset's train, validation and test splits with their description (sizes, classes, shape)."""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass(frozen=True)
class Splits:
  """The three splits, each {'image': uint8 [N,H,W,C], 'label': int32 [N]} numpy arrays or (an image folder not
  yet read) an unbatched tf.data dataset of such examples; `loading.load_data` gives arrays."""
  train: Any
  validation: Any
  test: Any | None
  num_train: int
  num_validation: int
  num_test: int
  num_classes: int
  image_shape: tuple[int, int, int]
  class_names: tuple[str, ...]
