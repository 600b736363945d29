"""Reference models: pinned parameter counts, output shapes, and dropout that ignores the device layout."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_val import config_check, models
from cnn_val.configs import cifar10_resnet, default, fashion_mnist_bn


def _count(model, shape):
  # Shapes only: nothing is computed (run op by op, a ResNet-20's init alone took 12 s).
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(shape), train=False))
  return sum(x.size for x in jax.tree.leaves(variables["params"]))


@pytest.mark.parametrize("name,expected", [
    ("SeedCNN", 54_410),  # Keras: conv 320 + dense 5408*10+10
    ("SeedCNNDropout", 34_826),  # Keras' MNIST convnet example: 320 + 18,496 + 16,010
])
def test_seed_model_parameter_counts(name, expected):
  config = default.get_config()
  config.model.name = name
  assert _count(models.create_model(config.model, 10), (1, 28, 28, 1)) == expected


def _seed_config(name, **fields):
  config = default.get_config()
  config.model.name = name
  for field, value in fields.items():
    config.model[field] = value
  return config


@pytest.mark.parametrize("name,fields,expected", [
    # conv 3x3x1x64+64 = 640 (28 -> 26 -> pool 13); dense 13*13*64*10+10 = 108,170
    ("SeedCNN", {"width_multiplier": 2.0}, 108_810),
    # convs 320 + 3x3x32x64+64 = 18,496 (13 -> 11 -> pool 5); dense 5*5*64*10+10 = 16,010: example 3's layers
    ("SeedCNN", {"extra_blocks": 1}, 34_826),
    # convs 640 + 3x3x64x128+128 = 73,856; dense 5*5*128*10+10 = 32,010
    ("SeedCNN", {"width_multiplier": 2.0, "extra_blocks": 1}, 106_506),
    # convs 640 + 73,856; dense 5*5*128*10+10 = 32,010
    ("SeedCNNDropout", {"width_multiplier": 2.0}, 106_506),
    # convs 320 + 18,496 + 3x3x64x128+128 = 73,856 (5 -> 3 -> pool 1); dense 1*1*128*10+10 = 1,290
    ("SeedCNNDropout", {"extra_blocks": 1}, 93_962),
    # convs 640 + 73,856 + 3x3x128x256+256 = 295,168; dense 1*1*256*10+10 = 2,570
    ("SeedCNNDropout", {"width_multiplier": 2.0, "extra_blocks": 1}, 372_234),
    # two convs a block: 320 + 3x3x32x32+32 = 9,248 (28 -> 26 -> 24 -> pool 12); dense 12*12*32*10+10 = 46,090
    ("SeedCNN", {"convs_per_block": 2}, 55_658),
    # 320 + 9,248 + 18,496 + 3x3x64x64+64 = 36,928 (12 -> 10 -> 8 -> pool 4); dense 4*4*64*10+10 = 10,250
    ("SeedCNNDropout", {"convs_per_block": 2}, 75_242),
])
def test_wider_and_deeper_seed_models(name, fields, expected):
  model = models.create_model(_seed_config(name, **fields).model, 10)
  x = jax.random.uniform(jax.random.key(1), (3, 28, 28, 1))
  variables = model.init(jax.random.key(0), x, train=False)
  assert sum(p.size for p in jax.tree.leaves(variables["params"])) == expected
  assert model.apply(variables, x, train=False).shape == (3, 10)
  logits = model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(2)})
  assert logits.shape == (3, 10) and bool(jnp.all(jnp.isfinite(logits)))


def test_seed_block_widths_round_and_double():
  assert models.seed_block_widths((32, 64), 1.0, 0) == (32, 64)
  assert models.seed_block_widths((32, 64), 0.5, 2) == (16, 32, 64, 128)
  assert models.seed_block_widths((32,), 1.3, 1) == (42, 84)  # round(41.6)
  assert models.seed_block_widths((32,), 0.001, 1) == (1, 2)  # never below one channel


def test_create_model_builds_the_seed_levers_from_the_config():
  model = models.create_model(
      _seed_config("SeedCNNDropout", width_multiplier=1.5, extra_blocks=1, block_dropout_rate=0.25).model, 10)
  assert (model.width_multiplier, model.extra_blocks, model.block_dropout_rate, model.dropout_rate) == (
      1.5, 1, 0.25, 0.5)
  model = models.create_model(_seed_config("SeedCNN", extra_blocks=2).model, 10)
  assert (model.width_multiplier, model.extra_blocks, model.block_dropout_rate) == (1.0, 2, 0.0)
  # A config written before the levers existed (an old run's config.json) still builds the seed model.
  config = _seed_config("SeedCNNDropout")
  del config.model.width_multiplier, config.model.extra_blocks
  assert _count(models.create_model(config.model, 10), (1, 28, 28, 1)) == 34_826


def test_two_convs_a_block_keep_the_seed_models_names_and_normalise_every_conv():
  # At the default of one conv a block the layers keep the seed's names (Conv_0, Conv_1): old checkpoints load.
  x = jnp.zeros((1, 28, 28, 1))
  plain = jax.eval_shape(lambda: models.create_model(_seed_config("SeedCNNDropout").model, 10).init(
      jax.random.key(0), x, train=False))
  assert sorted(plain["params"]) == ["Conv_0", "Conv_1", "Dense_0"]
  model = models.create_model(_seed_config("SeedCNNDropout", convs_per_block=2, batchnorm=True).model, 10)
  assert model.convs_per_block == 2
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
  assert sorted(variables["params"]) == ["BlockNorm_0", "BlockNorm_0_1", "BlockNorm_1", "BlockNorm_1_1", "Conv_0",
                                         "Conv_1", "Conv_2", "Conv_3", "Dense_0"]
  assert variables["params"]["Conv_1"]["kernel"].shape == (3, 3, 32, 32)
  assert variables["params"]["BlockNorm_1_1"]["scale"].shape == (64,)
  # Four convs a block just fit (28 -> 20 -> pool 10 -> 2 -> pool 1); five need 2 * (2 + 10) + 10 = 34: an error.
  assert _count(models.create_model(_seed_config("SeedCNNDropout", convs_per_block=4).model, 10), x.shape) > 0
  with pytest.raises(ValueError, match=r"SeedCNNDropout needs an input of at least 34x34 for its 2 conv block\(s\) "
                                       r"of 5 3x3 VALID convs \(config.model.convs_per_block\); got 28x28"):
    _count(models.create_model(_seed_config("SeedCNNDropout", convs_per_block=5).model, 10), x.shape)
  with pytest.raises(ValueError, match=r"config.model.extra_blocks=1: a 28x28 input allows at most 0 extra block"):
    _count(models.create_model(_seed_config("SeedCNNDropout", convs_per_block=2, extra_blocks=1).model, 10), x.shape)


def test_seed_models_with_batchnorm_normalise_each_conv_and_keep_statistics():
  config = _seed_config("SeedCNNDropout", batchnorm=True)
  assert models.has_batch_statistics(config.model)
  assert not models.has_batch_statistics(_seed_config("SeedCNNDropout").model)
  model = models.create_model(config.model, 10)
  x = jax.random.uniform(jax.random.key(1), (4, 28, 28, 1))
  variables = model.init(jax.random.key(0), x, train=False)
  # The convs lose their biases (32 + 64) to the norms' scales and offsets (2 x (32 + 64)).
  assert sum(p.size for p in jax.tree.leaves(variables["params"])) == 34_826 - 96 + 192
  assert sorted(variables["batch_stats"]) == ["BlockNorm_0", "BlockNorm_1"]
  logits, updates = model.apply(variables, x, train=True, rngs={"dropout": jax.random.key(2)},
                                mutable=["batch_stats"])
  assert logits.shape == (4, 10)
  moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), updates["batch_stats"], variables["batch_stats"])
  assert min(jax.tree.leaves(moved)) > 0  # training updates the running statistics; evaluation reads them
  assert model.apply(variables, x, train=False).shape == (4, 10)


@pytest.mark.parametrize("name", ["SeedCNN", "SeedCNNDropout"])
def test_seed_block_dropout_is_per_example_and_training_only(name):
  # dropout_rate=0: whatever changes in training comes from the dropout after the conv blocks.
  model = models.create_model(_seed_config(name, block_dropout_rate=0.5, dropout_rate=0.0).model, 10)
  plain = models.create_model(_seed_config(name, dropout_rate=0.0).model, 10)
  x = jax.random.uniform(jax.random.key(1), (4, 28, 28, 1))
  variables = model.init(jax.random.key(0), x, train=False)  # dropout has no parameters: same for both
  rngs = {"dropout": jax.random.key(2)}
  ids = jnp.arange(10, 14)
  evaluated = model.apply(variables, x, train=False)
  np.testing.assert_array_equal(evaluated, plain.apply(variables, x, train=False))
  trained = model.apply(variables, x, train=True, example_ids=ids, rngs=rngs)
  np.testing.assert_array_equal(plain.apply(variables, x, train=True, example_ids=ids, rngs=rngs), evaluated)
  assert not np.allclose(trained, evaluated, atol=1e-3)
  # Example 2 alone with its id (as on another device) gets the mask it got in the batch of 4 ...
  alone = model.apply(variables, x[2:3], train=True, example_ids=ids[2:3], rngs=rngs)
  np.testing.assert_allclose(alone, trained[2:3], rtol=1e-5, atol=1e-6)
  # ... and another id gives it another mask.
  other = model.apply(variables, x[2:3], train=True, example_ids=ids[:1], rngs=rngs)
  assert not np.allclose(other, trained[2:3], atol=1e-3)


@pytest.mark.parametrize("name,shape,max_extra", [
    ("SeedCNN", (1, 28, 28, 1), 2),  # 28 -> 13 | 13 -> 5 -> 1
    ("SeedCNNDropout", (1, 28, 28, 1), 1),  # 28 -> 13 -> 5 | 5 -> 1
    ("SeedCNNDropout", (1, 32, 32, 3), 1),  # 32 -> 15 -> 6 | 6 -> 2
    ("SeedCNNDropout", (1, 28, 64, 1), 1),  # the smaller side decides
])
def test_too_many_extra_blocks_is_a_clear_error(name, shape, max_extra):
  def init_shapes(extra_blocks):  # shapes only: the check runs while tracing, no convolution is computed
    model = models.create_model(_seed_config(name, extra_blocks=extra_blocks).model, 10)
    return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(shape), train=False))

  assert init_shapes(max_extra)["params"]
  size = f"{shape[1]}x{shape[2]}"
  with pytest.raises(ValueError, match=rf"config.model.extra_blocks={max_extra + 1}: a {size} input allows at most "
                                       rf"{max_extra} extra"):
    init_shapes(max_extra + 1)


@pytest.mark.parametrize("size,name,convs,allowed", [
    ((28, 28), "SeedCNN", 1, 2), ((28, 28), "SeedCNNDropout", 1, 1), ((28, 28), "SeedCNNDropout", 2, 0),
    ((32, 32), "SeedCNNDropout", 2, 0), ((28, 28), "SeedCNNDropout", 4, 0), ((28, 28), "SeedCNNDropout", 5, -1),
    ((8, 8), "SeedCNNDropout", 1, -1), ((28, 64), "SeedCNN", 1, 2),
])
def test_seed_extra_blocks_allowed_is_what_the_model_builds(size, name, convs, allowed):
  # The doctor's lever menu asks this without building a model; the model's own check must agree.
  assert models.seed_extra_blocks_allowed(*size, models.SEED_BLOCKS[name], convs) == allowed

  def init_shapes(extra_blocks):
    model = models.create_model(_seed_config(name, convs_per_block=convs, extra_blocks=extra_blocks).model, 10)
    return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, *size, 1)), train=False))

  if allowed >= 0:
    assert init_shapes(allowed)["params"]
  with pytest.raises(ValueError, match="needs an input of at least" if allowed < 0 else "extra_blocks"):
    init_shapes(max(allowed, 0) + 1 if allowed >= 0 else 0)


def test_too_small_input_for_the_seed_blocks_is_a_clear_error():
  # 8 -> 6 -> pool 3 -> 1 -> pool 0: the seed's own two blocks need 10x10 (before: a bare ZeroDivisionError).
  model = models.create_model(_seed_config("SeedCNNDropout").model, 10)
  with pytest.raises(ValueError, match=r"SeedCNNDropout needs an input of at least 10x10 .* got 8x8"):
    jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)), train=False))


@pytest.mark.parametrize("field,value,expected", [
    ("width_multiplier", 0.0, "a finite number > 0"),
    ("width_multiplier", float("inf"), "a finite number > 0"),
    ("width_multiplier", float("nan"), "a finite number > 0"),
    ("extra_blocks", -1, "an integer >= 0"),
    ("convs_per_block", 0, "an integer >= 1"),
    ("convs_per_block", -2, "an integer >= 1"),
    ("block_dropout_rate", 1.0, r"a rate in \[0, 1\)"),
])
def test_config_check_rejects_bad_seed_levers(field, value, expected):
  config = _seed_config("SeedCNN", **{field: value})
  with pytest.raises(ValueError, match=rf"config.model.{field}={value!r}: expected {expected}"):
    config_check.validate(config)


def test_config_check_accepts_the_seed_levers():
  config_check.validate(_seed_config("SeedCNNDropout", width_multiplier=0.5, extra_blocks=1, block_dropout_rate=0.3))


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
  from cnn_val.configs import default
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


def test_a_run_from_before_the_seed_levers_existed_still_resumes(tmp_path):
  """config.json written before width_multiplier/extra_blocks existed trained the neutral values."""
  import json
  from cnn_val import rundir
  config = default.get_config()
  old = rundir.config_to_dict(config)
  del old["model"]["width_multiplier"], old["model"]["extra_blocks"]
  (tmp_path / rundir.CONFIG_FILE).write_text(json.dumps(old))
  (tmp_path / rundir.METRICS_FILE).write_text('{"epoch": 1, "step": 100, "val_accuracy": 0.8}\n')  # it trained
  rundir.write_or_check_config(str(tmp_path), config)  # no error
  config.model.extra_blocks = 1
  with pytest.raises(ValueError, match=r"different config \(model.extra_blocks: 0 -> 1\)"):
    rundir.write_or_check_config(str(tmp_path), config)
