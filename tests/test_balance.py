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


def test_logit_offsets_are_tau_times_the_log_prior_the_model_trains_on():
  counts = np.array([600, 300, 100, 0])
  offsets = balance.logit_offsets(counts, 1.0)
  np.testing.assert_allclose(offsets, np.log(np.array([600, 300, 100, 1]) / 1001))  # an empty class counts as 1
  np.testing.assert_allclose(balance.logit_offsets(counts, 0.5), 0.5 * offsets)
  assert balance.logit_offsets(counts, 0.0) is None
  resampled = balance.logit_offsets(counts, 1.0, "oversample")  # every class seen equally often: no adjustment
  np.testing.assert_allclose(resampled, np.log(0.25))


def test_the_logit_adjusted_loss_shifts_the_loss_not_the_predictions():
  import jax  # pylint: disable=import-outside-toplevel
  import optax  # pylint: disable=import-outside-toplevel
  from cnn_val import models, steps  # pylint: disable=import-outside-toplevel
  from cnn_val.configs import seed_ex1  # pylint: disable=import-outside-toplevel
  model = models.create_model(seed_ex1.get_config().model, 4)
  state = steps.create_train_state(model, optax.adam(1e-3), jax.random.key(0), (28, 28, 1))
  rng = np.random.default_rng(0)
  images = rng.uniform(size=(16, 28, 28, 1)).astype(np.float32)
  labels = rng.integers(0, 4, 16).astype(np.int32)

  def grads(offsets):
    return steps._grads(state.params, state.batch_stats, images, labels, np.arange(16), jax.random.key(1),
                        model=model, class_weights=None, logit_offsets=offsets)

  loss, grad, correct, _ = grads(None)
  logits = np.asarray(model.apply({"params": state.params}, images, train=False), np.float64)
  offsets = (0.0, -1.0, -3.0, -0.5)
  adjusted = logits + np.asarray(offsets)
  expected = np.mean(np.log(np.exp(adjusted).sum(1)) - adjusted[np.arange(16), labels])
  loss_adjusted, grad_adjusted, correct_adjusted, _ = grads(offsets)
  np.testing.assert_allclose(loss_adjusted, expected, rtol=1e-5)
  assert abs(float(loss_adjusted) - float(loss)) > 1e-3
  assert int(correct_adjusted) == int(correct) == int(np.sum(logits.argmax(1) == labels))  # raw logits decide
  # A constant offset changes nothing: the softmax does not see it.
  loss_shifted, grad_shifted, _, _ = grads((2.0,) * 4)
  np.testing.assert_allclose(loss_shifted, loss, rtol=1e-6)
  for a, b in zip(jax.tree.leaves(grad_shifted), jax.tree.leaves(grad)):
    np.testing.assert_allclose(a, b, atol=1e-6)
  assert any(np.max(np.abs(a - b)) > 1e-6 for a, b in zip(jax.tree.leaves(grad_adjusted), jax.tree.leaves(grad)))


def test_deferred_reweighting_weighs_every_class_alike_until_its_step():
  import jax  # pylint: disable=import-outside-toplevel
  import optax  # pylint: disable=import-outside-toplevel
  from cnn_val import models, steps  # pylint: disable=import-outside-toplevel
  from cnn_val.configs import seed_ex1  # pylint: disable=import-outside-toplevel
  model = models.create_model(seed_ex1.get_config().model, 4, axis_name=None)
  state = steps.create_train_state(model, optax.sgd(0.1), jax.random.key(0), (28, 28, 1))
  rng = np.random.default_rng(0)
  batch = {"image": rng.integers(0, 255, (16, 28, 28, 1), dtype=np.uint8),
           "label": rng.integers(0, 4, 16).astype(np.int32)}
  weights = (0.5, 1.0, 2.0, 4.0)

  def loss(at_step, **kw):
    step = jax.jit(lambda s: steps.train_step(s, batch, jax.random.key(1), model=model, tx=optax.sgd(0.1),
                                              axis_name=None, **kw))
    return float(step(state.replace(step=jax.numpy.asarray(at_step)))[1]["loss_sum"])

  plain, weighted = loss(4), loss(4, class_weights=weights)
  assert abs(plain - weighted) > 1e-3
  assert loss(4, class_weights=weights, reweight_from_step=5) == pytest.approx(plain, rel=1e-6)
  assert loss(5, class_weights=weights, reweight_from_step=5) == pytest.approx(loss(5, class_weights=weights),
                                                                            rel=1e-6)


def test_deferred_reweighting_needs_weights_and_fewer_epochs():
  from cnn_val import config_check  # pylint: disable=import-outside-toplevel
  from cnn_val.configs import default  # pylint: disable=import-outside-toplevel
  config = default.get_config()
  config.imbalance.deferred_epochs = 20
  with pytest.raises(ValueError, match="imbalance.deferred_epochs=20: expected 0 while imbalance.class_weighting='none'"):
    config_check.validate(config)
  config.imbalance.class_weighting = "inverse"
  config_check.validate(config)
  for bad in (25, -1):
    config.imbalance.deferred_epochs = bad
    with pytest.raises(ValueError, match=r"expected an integer in \[0, num_epochs=25\)"):
      config_check.validate(config)
