"""The nearest-neighbour reference on the pixels (knn.py) and its place in the audit."""

import numpy as np

from cnn_val import audit, knn


def _two_shapes(n, rng, side=28):
  """Class 0 lights the left half, class 1 the right half, each image with its own noise."""
  labels = np.arange(n) % 2
  images = rng.integers(0, 60, (n, side, side, 1))
  for i, label in enumerate(labels):
    images[i, :, (side // 2) * label:(side // 2) * (label + 1)] += 150
  return {"image": images.astype(np.uint8), "label": labels}


def test_the_lookup_labels_distinct_shapes_and_errs_on_wrong_labels():
  rng = np.random.default_rng(0)
  train, validation = _two_shapes(200, rng), _two_shapes(100, rng)
  exact = knn.reference(train, validation, 3)
  assert exact["accuracy"] == 1.0 and exact["errors"] == 0
  assert exact["per_class_recall"] == [1.0, 1.0, None]  # class 2 has no validation image
  swapped = {**validation, "label": np.where(np.arange(100) < 30, 1 - validation["label"], validation["label"])}
  wrong = knn.reference(train, swapped, 3)
  assert wrong["errors"] == 30 and wrong["accuracy"] == 0.7
  assert knn.reference(train, {"image": validation["image"][:0], "label": validation["label"][:0]}, 3) is None


def test_the_lookup_samples_with_a_fixed_seed_and_shrinks_large_images():
  rng = np.random.default_rng(1)
  train, validation = _two_shapes(300, rng, side=64), _two_shapes(120, rng, side=64)
  one = knn.reference(train, validation, 2, max_train=100, max_validation=50)
  assert one["train_examples"] == 100 and one["validation_examples"] == 50 and one["image_side"] == [32, 32]
  again = knn.reference(train, validation, 2, max_train=100, max_validation=50)
  assert one == again


def test_the_audit_holds_the_pixel_reference():
  rng = np.random.default_rng(2)
  report = audit.audit({"train": _two_shapes(60, rng), "validation": _two_shapes(20, rng)}, 2)
  assert report["pixel_reference"]["accuracy"] == 1.0 and report["pixel_reference"]["validation_examples"] == 20
  assert "pixel_reference" not in audit.audit({"train": _two_shapes(60, rng)}, 2)


def test_downsampling_gathers_the_indices_it_is_given():
  images = np.random.default_rng(3).integers(0, 256, (700, 40, 40, 3)).astype(np.uint8)
  picked = np.array([699, 3, 3, 512, 0])
  small, factor = knn.downsample(images, picked)
  assert factor == 2 and small.shape == (5, 20, 20, 3)
  np.testing.assert_array_equal(small, knn.downsample(images[picked])[0])


def test_a_models_error_as_a_multiple_of_the_lookups():
  assert abs(knn.error_ratio(0.91, {"accuracy": 0.85}) - 0.6) < 1e-12
  assert knn.error_ratio(0.9, {"accuracy": 1.0}) is None and knn.error_ratio(0.9, None) is None
  assert knn.error_ratio(None, {"accuracy": 0.85}) is None
