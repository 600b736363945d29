"""Reference models: pinned parameter counts, output shapes, and dropout that ignores the device layout."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_val import models
from configs import cifar10_resnet, default, fashion_mnist_bn


def _count(model, shape):
  variables = model.init(jax.random.key(0), jnp.zeros(shape), train=False)
  return sum(x.size for x in jax.tree.leaves(variables["params"]))


@pytest.mark.parametrize("name,expected", [
    ("SeedCNN", 54_410),  # Keras: conv 320 + dense 5408*10+10
    ("SeedCNNDropout", 34_826),  # Keras' MNIST convnet example: 320 + 18,496 + 16,010
])
def test_seed_model_parameter_counts(name, expected):
  config = default.get_config()
  config.model.name = name
  assert _count(models.create_model(config.model, 10), (1, 28, 28, 1)) == expected


def test_resnet20_parameter_count():
  # He et al. 2016 quote 0.27M for ResNet-20; 272,474 with 1x1 projection shortcuts.
  model = models.create_model(cifar10_resnet.get_config().model, 10)
  assert _count(model, (1, 32, 32, 3)) == 272_474


def test_convnet_parameter_count():
  model = models.create_model(fashion_mnist_bn.get_config().model, 10)
  # convs 288+9216+18432+36864, BN 4*(2*32)+... , dense 3136*256 + head 2570
  assert _count(model, (1, 28, 28, 1)) == 871_082


@pytest.mark.parametrize("config_fn,shape", [
    (default.get_config, (3, 28, 28, 1)),
    (fashion_mnist_bn.get_config, (3, 28, 28, 1)),
    (cifar10_resnet.get_config, (3, 32, 32, 3)),
])
def test_logits_shape_train_and_eval(config_fn, shape):
  model = models.create_model(config_fn().model, 7)
  variables = model.init(jax.random.key(0), jnp.zeros(shape), train=False)
  x = jax.random.uniform(jax.random.key(1), shape)
  logits = model.apply(variables, x, train=False)
  assert logits.shape == (3, 7)
  logits, _ = model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(2)},
                          mutable=["batch_stats"])
  assert logits.shape == (3, 7) and bool(jnp.all(jnp.isfinite(logits)))


def test_dropout_mask_depends_only_on_key_and_example_id():
  layer = models.Dropout(0.5)
  x = jnp.ones((8, 5, 5, 3))
  key = {"dropout": jax.random.key(3)}
  full = layer.apply({}, x, train=True, example_ids=jnp.arange(8), rngs=key)
  # The second half of the batch processed alone (as on a second device) gets the same masks.
  half = layer.apply({}, x[4:], train=True, example_ids=jnp.arange(4, 8), rngs=key)
  np.testing.assert_array_equal(full[4:], half)
  # Different examples get different masks, kept units are scaled by 1/keep, about half are dropped.
  assert not np.array_equal(full[0], full[1])
  assert set(np.unique(np.asarray(full))) <= {0.0, 2.0}
  assert 0.4 < float(jnp.mean(full == 0)) < 0.6
  np.testing.assert_array_equal(layer.apply({}, x, train=False), x)


def test_unknown_model_name_is_a_clear_error():
  config = default.get_config()
  config.model.name = "VGG"
  with pytest.raises(ValueError, match=r"config.model.name='VGG'.*SeedCNN"):
    models.create_model(config.model, 10)


def test_resnet_rejects_bad_depth():
  config = cifar10_resnet.get_config()
  config.model.depth = 21
  with pytest.raises(ValueError, match="6n \\+ 2"):
    _count(models.create_model(config.model, 10), (1, 32, 32, 3))


def test_prior_bias_init_starts_the_output_at_the_class_prior():
  import jax
  import jax.numpy as jnp
  import numpy as np
  from cnn_val import models
  from configs import default
  config = default.get_config().model
  counts = np.array([50, 30, 10, 5, 5, 0, 0, 0, 0, 0])
  config.prior_bias_init = True
  model = models.create_model(config, 10, class_prior=counts)
  params = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)), train=False)["params"]
  bias = params[sorted(k for k in params if k.startswith("Dense"))[-1]]["bias"]
  np.testing.assert_allclose(jax.nn.softmax(bias)[:5], counts[:5] / 100, rtol=1e-5)
  config.prior_bias_init = False
  params = models.create_model(config, 10, class_prior=counts).init(
      jax.random.key(0), jnp.zeros((1, 28, 28, 1)), train=False)["params"]
  assert not np.any(params[sorted(k for k in params if k.startswith("Dense"))[-1]]["bias"])
