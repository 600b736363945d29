"""The seed's three examples, field by field as the article wrote them (../shared/seed/, read when present),
and the Keras initialisers they use; and every public fault config loads and validates."""

import glob
import importlib
import os
import re

import jax
import numpy as np
import pytest

from cnn_val import augment, config_check, models, optim
from cnn_val.configs import seed_ex1, seed_ex2, seed_ex3

ARTICLE = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "shared",
                       "seed", "why-is-my-cnn-failing-validation-accuracy.md")
EXAMPLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "seed_examples.py.txt")

# The article's values (Keras defaults where it relies on them: batch 32, Adam epsilon 1e-7, lr 1e-3 for
# optimizer='adam', Glorot-uniform kernels, zero biases).
KERAS = {"batch_size": 32, "optim.optimizer": "adam", "optim.learning_rate": 1e-3, "optim.eps": 1e-7,
         "optim.b1": 0.9, "optim.b2": 0.999, "model.kernel_init": "glorot_uniform", "num_epochs": 10,
         "optim.weight_decay": 0.0, "optim.grad_clip_norm": 0.0, "eval_every_epochs": 1}
EXPECTED = {
    seed_ex1: {**KERAS, "model.name": "SeedCNN", "optim.schedule": "exponential", "optim.decay_steps": 10_000,
               "optim.decay_rate": 0.96, "optim.staircase": True, "augment.preset": "none"},
    seed_ex2: {**KERAS, "model.name": "SeedCNN", "optim.schedule": "constant", "augment.preset": "seed_ex2"},
    seed_ex3: {**KERAS, "model.name": "SeedCNNDropout", "model.dropout_rate": 0.5, "optim.schedule": "constant",
               "augment.preset": "none"},
}


def _get(config, field):
  for part in field.split("."):
    config = config[part]
  return config


@pytest.mark.parametrize("module", EXPECTED, ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_seed_configs_match_the_article(module):
  config = module.get_config()
  for field, value in EXPECTED[module].items():
    assert _get(config, field) == value, field
  assert not config.model.block_dropout_rate and config.model.width_multiplier == 1.0 and not config.model.extra_blocks


def test_the_expected_values_are_the_articles():
  with open(EXAMPLES) as f:  # the article's code, verbatim (and checked against the article where it is)
    text = f.read()
  if os.path.exists(ARTICLE):
    with open(ARTICLE) as f:
      article = f.read()
    assert all(block in article for block in text.split("\n\n", 1)[1].split("\n# ---\n"))
  assert re.search(r"initial_learning_rate = 0\.001", text) and re.search(r"decay_steps=10000", text)
  assert re.search(r"decay_rate=0\.96", text) and re.search(r"staircase=True", text)
  assert text.count("epochs=10") == 3 and "batch_size=32" in text and "Dropout(0.5)" in text
  generator = dict(re.findall(r"(\w+)=([\w.']+)", text[text.index("ImageDataGenerator("):text.index("fill_mode")
                                                       + 30]))
  preset = augment.PRESETS["seed_ex2"]
  for field in ("rotation_range", "width_shift_range", "height_shift_range", "shear_range", "zoom_range"):
    assert float(generator[field]) == preset[field], field
  assert generator["horizontal_flip"] == "True" and preset["horizontal_flip"]
  assert generator["fill_mode"].strip("'") == preset["fill_mode"]


def test_seed_ex1_staircase_decays_once_in_ten_epochs():
  schedule = optim.create_schedule(seed_ex1.get_config().optim, steps_per_epoch=1687, num_epochs=10)
  assert float(schedule(9_999)) == pytest.approx(1e-3) and float(schedule(10_000)) == pytest.approx(0.96e-3)
  assert float(schedule(16_869)) == pytest.approx(0.96e-3)


def test_keras_initialisers_keep_shapes_and_give_glorot_uniform_kernels():
  x = np.zeros((1, 28, 28, 1), np.float32)
  flax_params = models.SeedCNNDropout().init(jax.random.key(0), x, train=False)["params"]
  keras = models.SeedCNNDropout(kernel_init="glorot_uniform").init(jax.random.key(0), x, train=False)["params"]
  assert jax.tree.map(np.shape, flax_params) == jax.tree.map(np.shape, keras)
  kernel = np.asarray(keras["Conv_1"]["kernel"])  # 3x3x32 -> 64: Glorot's limit sqrt(6 / (fan_in + fan_out))
  limit = np.sqrt(6 / (3 * 3 * 32 + 3 * 3 * 64))
  assert np.abs(kernel).max() <= limit and np.abs(kernel).max() > 0.95 * limit
  assert not np.asarray(keras["Conv_1"]["bias"]).any() and not np.asarray(keras["Dense_0"]["bias"]).any()
  default = models.SeedCNNDropout(kernel_init="lecun_normal").init(jax.random.key(0), x, train=False)["params"]
  assert all(jax.tree.leaves(jax.tree.map(np.array_equal, flax_params, default)))  # lecun_normal is Flax's own


@pytest.mark.parametrize("name", sorted(
    os.path.basename(p)[:-3] for p in glob.glob(os.path.join(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))), "configs", "faults", "*.py")) if not p.endswith("__init__.py")))
def test_every_fault_config_loads_and_validates(name):
  """Each public fault config builds a config the training run accepts (config_check.validate)."""
  config = importlib.import_module(f"cnn_val.configs.faults.{name}").get_config()
  config_check.validate(config)
