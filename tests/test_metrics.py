"""Classification metrics from the confusion matrix, and their reduction across devices and padding."""

import jax
import numpy as np

from cnn_val import metrics, models, optim, steps
from cnn_val.configs import default


def test_metrics_from_a_hand_made_confusion_matrix():
  confusion = np.array([[8, 2, 0],   # class 0: 10 examples, recall 0.8
                        [3, 1, 0],   # class 1: 4 examples, recall 0.25
                        [0, 0, 0]])  # class 2: absent, never predicted
  m = metrics.from_confusion(confusion)
  assert m["per_class_recall"] == [0.8, 0.25, None]
  np.testing.assert_allclose(m["per_class_precision"][:2], [8 / 11, 1 / 3])
  assert m["per_class_precision"][2] is None
  np.testing.assert_allclose(m["balanced_accuracy"], (0.8 + 0.25) / 2)
  f1 = [2 * p * r / (p + r) for p, r in zip(m["per_class_precision"][:2], m["per_class_recall"][:2])]
  np.testing.assert_allclose(m["macro_f1"], np.mean(f1))
  assert m["pred_histogram"] == [11, 3, 0]


def test_a_present_class_never_predicted_scores_zero_not_nan():
  m = metrics.from_confusion([[5, 0], [5, 0]])
  assert m["per_class_recall"] == [1.0, 0.0] and m["per_class_precision"] == [0.5, 0.0]
  np.testing.assert_allclose(m["macro_f1"], (2 / 3 + 0) / 2)


def test_eval_metrics_on_four_devices_with_padding_equal_one_device():
  config = default.get_config()
  tx = optim.create_optimizer(config.optim, 10, 1)
  state = steps.create_train_state(models.create_model(config.model, 10), tx, jax.random.key(0), (28, 28, 1))
  rng = np.random.default_rng(0)
  n, padded = 37, 40
  images = rng.integers(0, 255, (padded, 28, 28, 1), dtype=np.uint8)
  labels = rng.integers(0, 10, padded).astype(np.int32)
  mask = np.arange(padded) < n
  sums = {}
  for devices in (1, 4):
    p_eval = steps.pmapped_steps(config, 10, tx, jax.local_devices()[:devices]).eval
    batch = {"image": images, "label": labels, "mask": mask}
    sums[devices] = p_eval(state, {k: v.reshape((devices, -1) + v.shape[1:]) for k, v in batch.items()})
  np.testing.assert_array_equal(sums[1]["confusion"], sums[4]["confusion"])
  assert int(sums[4]["confusion"].sum()) == n
  # The confusion matrix counts exactly the unpadded examples' (label, prediction) pairs.
  logits = models.create_model(config.model, 10).apply({"params": state.params},
                                                       images[:n].astype(np.float32) / 255, train=False)
  expected = np.zeros((10, 10), int)
  np.add.at(expected, (labels[:n], np.argmax(logits, -1)), 1)
  np.testing.assert_array_equal(sums[4]["confusion"], expected)
