"""Schedules against their formulas (Keras ExponentialDecay semantics) and masked, decoupled weight decay."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from cnn_val import optim
from cnn_val.configs import default


def _optim_config(**overrides):
  config = default.get_config().optim
  config.update(overrides)
  return config


@pytest.mark.parametrize("staircase", [False, True])
def test_exponential_decay_matches_keras_formula(staircase):
  lr, decay_steps, rate = 1e-3, 700, 0.8
  schedule = optim.create_schedule(
      _optim_config(learning_rate=lr, schedule="exponential", decay_steps=decay_steps, decay_rate=rate,
                    staircase=staircase), steps_per_epoch=100, num_epochs=30)
  for step in (0, 1, 350, 699, 700, 701, 1400, 2999):
    exponent = step // decay_steps if staircase else step / decay_steps
    np.testing.assert_allclose(float(schedule(step)), lr * rate ** exponent, rtol=1e-6)


def test_cosine_and_warmup_cosine():
  cosine = optim.create_schedule(_optim_config(schedule="cosine", learning_rate=0.1, cosine_alpha=0.0),
                                 steps_per_epoch=10, num_epochs=10)
  np.testing.assert_allclose([float(cosine(s)) for s in (0, 50, 100)], [0.1, 0.05, 0.0], atol=1e-7)
  warm = optim.create_schedule(
      _optim_config(schedule="warmup_cosine", learning_rate=0.1, warmup_epochs=2.0, cosine_alpha=0.0),
      steps_per_epoch=10, num_epochs=10)
  np.testing.assert_allclose([float(warm(s)) for s in (0, 10, 20, 100)], [0.0, 0.05, 0.1, 0.0], atol=1e-7)
  const = optim.create_schedule(_optim_config(schedule="constant", learning_rate=0.3), 10, 10)
  assert float(const(12345)) == pytest.approx(0.3)


PARAMS = {
    "conv": {"kernel": jnp.ones((3, 3, 1, 4)), "bias": jnp.ones((4,))},
    "bn": {"scale": jnp.ones((4,)), "bias": jnp.ones((4,))},
}
ZERO_GRADS = jax.tree.map(jnp.zeros_like, PARAMS)


def test_decay_mask_leaves_biases_and_norm_scales_alone():
  mask = optim.decay_mask(PARAMS)
  assert mask == {"conv": {"kernel": True, "bias": False}, "bn": {"scale": False, "bias": False}}


def test_decoupled_weight_decay_equals_masked_adamw():
  config = _optim_config(optimizer="adamw", schedule="constant", learning_rate=0.01, weight_decay=0.1,
                         weight_decay_mode="decoupled")
  tx = optim.create_optimizer(config, 10, 1)
  reference = optax.adamw(0.01, b1=config.b1, b2=config.b2, eps=config.eps, weight_decay=0.1,
                          mask=optim.decay_mask)
  grads = jax.tree.map(lambda p: 0.3 * jnp.ones_like(p), PARAMS)
  ours, _ = tx.update(grads, tx.init(PARAMS), PARAMS)
  theirs, _ = reference.update(grads, reference.init(PARAMS), PARAMS)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), ours, theirs)
  # With zero gradients only the decay moves a parameter, and only a kernel: -lr * wd * w.
  update, _ = tx.update(ZERO_GRADS, tx.init(PARAMS), PARAMS)
  np.testing.assert_allclose(update["conv"]["kernel"], -0.01 * 0.1 * np.ones((3, 3, 1, 4)), rtol=1e-6)
  for leaf in (update["conv"]["bias"], update["bn"]["scale"], update["bn"]["bias"]):
    np.testing.assert_array_equal(leaf, 0.0)


def test_l2_mode_adds_decay_to_the_gradient_before_sgd():
  config = _optim_config(optimizer="sgd", momentum=0.0, schedule="constant", learning_rate=0.5,
                         weight_decay=0.2, weight_decay_mode="l2")
  tx = optim.create_optimizer(config, 10, 1)
  update, _ = tx.update(ZERO_GRADS, tx.init(PARAMS), PARAMS)
  np.testing.assert_allclose(update["conv"]["kernel"], -0.5 * 0.2, rtol=1e-6)
  np.testing.assert_array_equal(update["conv"]["bias"], 0.0)


def test_adam_l2_differs_from_decoupled():
  """Under Adam, L2 is rescaled by the adaptive denominator; decoupled decay is not (the AdamW point)."""
  grads = jax.tree.map(lambda p: 0.3 * jnp.ones_like(p), PARAMS)
  updates = {}
  for mode in ("l2", "decoupled"):
    tx = optim.create_optimizer(_optim_config(optimizer="adam", schedule="constant", learning_rate=0.01,
                                              weight_decay=0.1, weight_decay_mode=mode), 10, 1)
    updates[mode], _ = tx.update(grads, tx.init(PARAMS), PARAMS)
  assert not np.allclose(updates["l2"]["conv"]["kernel"], updates["decoupled"]["conv"]["kernel"])


def test_bad_optimizer_settings_are_clear_errors():
  with pytest.raises(ValueError, match=r"config.optim.optimizer='rmsprop'"):
    optim.create_optimizer(_optim_config(optimizer="rmsprop"), 10, 1)
  with pytest.raises(ValueError, match=r"config.optim.schedule='step'"):
    optim.create_schedule(_optim_config(schedule="step"), 10, 1)
  with pytest.raises(ValueError, match="weight_decay_mode='decoupled'"):
    optim.create_optimizer(_optim_config(optimizer="adamw", weight_decay=0.1, weight_decay_mode="l2"), 10, 1)


@pytest.mark.parametrize("field,value,expected", [
    ("learning_rate", float("inf"), r"config.optim.learning_rate=inf: expected a finite number > 0"),
    ("learning_rate", 0.0, r"config.optim.learning_rate=0.0: expected a finite number > 0"),
    ("weight_decay", float("nan"), r"config.optim.weight_decay=nan: expected a finite number >= 0"),
    ("decay_rate", 100.0, r"config.optim.decay_rate=100.0: expected a factor in \(0, 1\] .*above 1 the learning "
                          r"rate grows"),
    ("decay_rate", float("nan"), r"config.optim.decay_rate=nan: expected a factor in \(0, 1\]")])
def test_config_check_rejects_rates_that_cannot_train(field, value, expected):
  from cnn_val import config_check  # pylint: disable=import-outside-toplevel
  config = default.get_config()
  config.optim[field] = value
  with pytest.raises(ValueError, match=expected):
    config_check.validate(config)


def test_keyword_optimizer_equals_the_config_one():
  assert optim.optim_config().to_dict() == default.get_config().optim.to_dict()  # DEFAULTS == default.py's
  params = {"w": jnp.ones((3,)), "b": jnp.ones((2,))}
  grads = {"w": jnp.full((3,), 0.5), "b": jnp.full((2,), -0.25)}
  from_kwargs = optim.create_optimizer(learning_rate=3e-3, weight_decay=1e-2, steps_per_epoch=10, num_epochs=2)
  from_config = optim.create_optimizer(_optim_config(learning_rate=3e-3, weight_decay=1e-2), 10, 2)
  a, _ = from_kwargs.update(grads, from_kwargs.init(params), params)
  b, _ = from_config.update(grads, from_config.init(params), params)
  assert jax.tree.map(lambda x, y: bool(jnp.array_equal(x, y)), a, b) == {"w": True, "b": True}
  with pytest.raises(ValueError, match=r"unknown field\(s\) \['learning_rte'\]"):
    optim.create_optimizer(learning_rte=1e-3)
