"""Class weights and class-balanced resampling."""

import numpy as np
import pytest

from cnn_val.data import balance


def _labels(counts):
  return np.random.default_rng(0).permutation(np.repeat(np.arange(len(counts)), counts)).astype(np.int32)


def test_inverse_weights_are_inverse_frequency_with_unit_mean():
  counts = np.array([600, 300, 100, 0])
  w = balance.class_weights(counts, "inverse")
  np.testing.assert_allclose(w[:3] * counts[:3], [1000 / 3] * 3)  # every class contributes equally
  assert w[3] == 0
  np.testing.assert_allclose(np.sum(w * counts) / counts.sum(), 1.0)  # the loss keeps its scale


def test_effective_number_weights_follow_cui_et_al():
  counts = np.array([5000, 500, 50])
  beta = 0.999
  w = balance.class_weights(counts, "effective_number", beta)
  effective = (1 - beta ** counts) / (1 - beta)
  np.testing.assert_allclose(w / w[0], effective[0] / effective)
  np.testing.assert_allclose(np.sum(w * counts), counts.sum())
  # beta -> 0: equal weights; beta -> 1: inverse frequency
  np.testing.assert_allclose(balance.class_weights(counts, "effective_number", 0.0), 1.0)
  np.testing.assert_allclose(balance.class_weights(counts, "effective_number", 1 - 1e-9),
                             balance.class_weights(counts, "inverse"), rtol=1e-4)
  assert balance.class_weights(counts, "none") is None


@pytest.mark.parametrize("mode,expected_per_class", [("oversample", 600), ("undersample", 20)])
def test_resampling_gives_equal_class_frequencies(mode, expected_per_class):
  labels = _labels([600, 200, 20])
  order = balance.epoch_order(labels, 3, mode, seed=0, epoch=0)
  assert len(order) == balance.epoch_size(np.bincount(labels), mode) == 3 * expected_per_class
  np.testing.assert_array_equal(np.bincount(labels[order], minlength=3), [expected_per_class] * 3)
  if mode == "oversample":  # every example appears at least once
    assert set(order.tolist()) == set(range(len(labels)))
  else:  # no repeats
    assert len(set(order.tolist())) == len(order)
  again = balance.epoch_order(labels, 3, mode, seed=0, epoch=0)
  np.testing.assert_array_equal(order, again)  # seeded
  assert not np.array_equal(order, balance.epoch_order(labels, 3, mode, seed=0, epoch=1))


def test_no_resampling_is_a_permutation_and_missing_classes_are_skipped():
  labels = _labels([50, 0, 30])
  order = balance.epoch_order(labels, 3, "none", seed=1, epoch=2)
  np.testing.assert_array_equal(np.sort(order), np.arange(80))
  over = balance.epoch_order(labels, 3, "oversample", seed=1, epoch=2)
  np.testing.assert_array_equal(np.bincount(labels[over], minlength=3), [50, 0, 50])


def test_bad_modes_name_the_field():
  with pytest.raises(ValueError, match="config.imbalance.class_weighting='focal'"):
    balance.class_weights([1, 2], "focal")
  with pytest.raises(ValueError, match="config.imbalance.resampling='smote'"):
    balance.epoch_size([1, 2], "smote")
  with pytest.raises(ValueError, match="config.imbalance.beta=1.0"):
    balance.class_weights([1, 2], "effective_number", 1.0)
