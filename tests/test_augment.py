"""On-device augmentation: Keras' transform semantics, per-example determinism, presets, errors."""

import jax
import jax.numpy as jnp
from keras.src.legacy.preprocessing import image as keras_image
import ml_collections
import numpy as np
import pytest

from cnn_val import augment
from cnn_val.configs import default
from tests.conftest import real_images


def _params(**fields):
  config = default.get_config().augment
  for k, v in fields.items():
    config[k] = v
  return augment.from_config(config)


@pytest.mark.parametrize("fill_mode", augment.FILL_MODES)
def test_fixed_transform_equals_keras_apply_affine_transform_on_real_images(fill_mode):
  images = real_images(4).astype(np.float32) / 255.0
  theta, tx, ty, shear, zx, zy = 17.0, 2.5, -3.2, 8.0, 0.9, 1.15
  matrix = augment.keras_matrix(theta, tx, ty, shear, zx, zy, 28, 28)
  # Keras documents 'wrap' as abcd|abcd|abcd, which is scipy's 'grid-wrap' (scipy's legacy 'wrap',
  # which Keras passes on, overlaps the first and last pixel instead).
  scipy_mode = "grid-wrap" if fill_mode == "wrap" else fill_mode
  for image in images:
    expected = keras_image.apply_affine_transform(
        image, theta=theta, tx=tx, ty=ty, shear=shear, zx=zx, zy=zy, row_axis=0, col_axis=1, channel_axis=2,
        fill_mode=scipy_mode, cval=0.3)
    got = augment.warp(jnp.asarray(image), matrix, fill_mode=fill_mode, cval=0.3)
    np.testing.assert_allclose(np.asarray(got), expected, atol=1e-5)


def test_non_square_rgb_image_matches_keras():
  image = np.random.default_rng(0).random((20, 32, 3)).astype(np.float32)
  expected = keras_image.apply_affine_transform(image, theta=-25, tx=1.5, ty=4, zx=1.1, zy=0.95, row_axis=0,
                                                col_axis=1, channel_axis=2, fill_mode="reflect")
  got = augment.warp(jnp.asarray(image), augment.keras_matrix(-25.0, 1.5, 4.0, 0.0, 1.1, 0.95, 20, 32),
                     fill_mode="reflect")
  np.testing.assert_allclose(np.asarray(got), expected, atol=1e-5)


def test_each_example_depends_only_on_its_global_index():
  params = _params(preset="characters", horizontal_flip=True, brightness=0.2, contrast=0.2, gamma=0.3)
  images = jnp.asarray(real_images(16).astype(np.float32) / 255.0)
  ids, key = jnp.arange(16), jax.random.key(3)
  whole = augment.augment_batch(params, images, ids, key)
  halves = jnp.concatenate([augment.augment_batch(params, images[:8], ids[:8], key),
                            augment.augment_batch(params, images[8:], ids[8:], key)])
  np.testing.assert_allclose(np.asarray(whole), np.asarray(halves), atol=1e-6)
  assert not np.allclose(whole, images, atol=1e-3)  # it did change the images
  other_key = augment.augment_batch(params, images, ids, jax.random.key(4))
  assert not np.allclose(whole, other_key, atol=1e-3)


def test_flips_are_exact_mirrors_about_half_the_time():
  images = jnp.asarray(real_images(200).astype(np.float32) / 255.0)
  out = np.asarray(augment.augment_batch(_params(horizontal_flip=True), images, jnp.arange(200),
                                         jax.random.key(0)))
  same = np.all(out == np.asarray(images), axis=(1, 2, 3))
  mirrored = np.all(out == np.asarray(images)[:, :, ::-1], axis=(1, 2, 3))
  assert np.all(same | mirrored)
  assert 70 < mirrored.sum() < 130  # Binomial(200, 1/2): 5 standard deviations either side
  out_v = np.asarray(augment.augment_batch(_params(vertical_flip=True), images, jnp.arange(200),
                                           jax.random.key(0)))
  assert np.all(np.all(out_v == np.asarray(images), axis=(1, 2, 3))
                | np.all(out_v == np.asarray(images)[:, ::-1], axis=(1, 2, 3)))


def test_shift_range_draws_stay_in_range_and_move_pixels():
  # A single bright pixel in the centre: a pure shift moves it by at most 0.25 * 28 = 7 pixels per axis.
  image = np.zeros((1, 28, 28, 1), np.float32)
  image[0, 14, 14, 0] = 1.0
  images = jnp.asarray(np.repeat(image, 64, axis=0))
  out = np.asarray(augment.augment_batch(_params(width_shift_range=0.25, height_shift_range=0.25,
                                                 fill_mode="constant"), images, jnp.arange(64),
                                         jax.random.key(1)))
  mass_r = (out[..., 0].sum(axis=2) * np.arange(28)).sum(axis=1) / out[..., 0].sum(axis=(1, 2))
  mass_c = (out[..., 0].sum(axis=1) * np.arange(28)).sum(axis=1) / out[..., 0].sum(axis=(1, 2))
  assert np.all(np.abs(mass_r - 14) <= 7.0 + 1e-4) and np.all(np.abs(mass_c - 14) <= 7.0 + 1e-4)
  assert np.std(mass_r) > 2 and np.std(mass_c) > 2  # U(-7, 7) has a standard deviation of 4


def test_lighting_semantics():
  images = jnp.asarray(real_images(64).astype(np.float32) / 255.0) * 0.5 + 0.25  # room to brighten
  ids, key = jnp.arange(64), jax.random.key(2)
  bright = np.asarray(augment.augment_batch(_params(brightness=0.2), images, ids, key))
  delta = bright - np.asarray(images)
  per_image = delta.reshape(64, -1)
  np.testing.assert_allclose(per_image, per_image[:, :1] * np.ones_like(per_image), atol=1e-6)
  assert np.all(np.abs(per_image[:, 0]) <= 0.2) and per_image[:, 0].std() > 0.05
  contrast = np.asarray(augment.augment_batch(_params(contrast=0.5), images, ids, key))
  np.testing.assert_allclose(contrast.mean(axis=(1, 2, 3)), np.asarray(images).mean(axis=(1, 2, 3)), atol=1e-5)
  ratio = contrast.std(axis=(1, 2, 3)) / np.asarray(images).std(axis=(1, 2, 3))
  assert np.all((ratio >= 0.5 - 1e-4) & (ratio <= 1.5 + 1e-4)) and ratio.std() > 0.1
  gamma = np.asarray(augment.augment_batch(_params(gamma=1.0), images, ids, key))
  assert gamma.min() >= 0 and gamma.max() <= 1
  exponent = np.log(gamma[:, 10, 10, 0]) / np.log(np.asarray(images)[:, 10, 10, 0])
  assert np.all((exponent > 0.5 - 1e-3) & (exponent < 2.0 + 1e-3))


def test_colour_jitter_semantics_on_rgb_and_a_clear_error_on_grayscale():
  """hue turns every pixel's hue by one per-image delta in [-h, h] (brightness = HSV value kept); saturation
  scales it by one factor in [1 - s, 1 + s]; other draws are unchanged by turning colour on."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.uniform(0.1, 0.9, (16, 8, 8, 3)).astype(np.float32))
  ids, key = jnp.arange(16), jax.random.key(3)
  hsv = lambda x: tf.image.rgb_to_hsv(np.asarray(x)).numpy()
  before = hsv(images)
  turned = hsv(augment.augment_batch(_params(hue=0.2), images, ids, key))
  delta = (turned[..., 0] - before[..., 0] + 0.5) % 1.0 - 0.5  # the turn, on the circle
  per_image = delta.reshape(16, -1)
  np.testing.assert_allclose(per_image, per_image[:, :1] * np.ones_like(per_image), atol=2e-3)
  assert np.all(np.abs(per_image[:, 0]) <= 0.2 + 2e-3) and per_image[:, 0].std() > 0.05
  np.testing.assert_allclose(turned[..., 2], before[..., 2], atol=1e-5)  # value (brightness) kept
  saturated = hsv(augment.augment_batch(_params(saturation=0.5), images, ids, key))
  factor = (saturated[..., 1] / before[..., 1]).reshape(16, -1)
  unclipped = (before[..., 1].reshape(16, -1) * 1.5) < 1
  assert np.all((factor[unclipped] >= 0.5 - 1e-3) & (factor[unclipped] <= 1.5 + 1e-3))
  # Turning colour on leaves the geometric draws as they were (its draws come from a key of their own).
  shifted = augment.augment_batch(_params(width_shift_range=0.3), images, ids, key)
  both = augment.augment_batch(_params(width_shift_range=0.3, saturation=1e-6), images, ids, key)
  np.testing.assert_allclose(both, jnp.clip(shifted, 0, 1), atol=1e-5)
  with pytest.raises(ValueError, match="config.augment.hue and config.augment.saturation need RGB images; "
                                       "these have 1 channel"):
    augment.augment_batch(_params(hue=0.1), images[..., :1], ids, key)
  with pytest.raises(ValueError, match="config.augment.hue=0.7: expected a number in"):
    _params(hue=0.7)


def test_standardize_is_deterministic_preprocessing():
  params = _params(standardize=True)
  assert not params.random  # nothing random: the train step leaves the images alone until preprocess
  out = np.asarray(augment.preprocess(params, jnp.asarray(real_images(8).astype(np.float32) / 255.0)))
  np.testing.assert_allclose(out.mean(axis=(1, 2, 3)), 0, atol=1e-5)
  np.testing.assert_allclose(out.std(axis=(1, 2, 3)), 1, atol=1e-3)


def test_presets_and_explicit_fields():
  assert _params() == augment.Augment()
  characters = _params(preset="characters")
  assert characters.rotation_range == 10 and characters.zoom_range == (0.9, 1.1)
  assert not characters.horizontal_flip and not characters.vertical_flip
  assert _params(preset="characters", rotation_range=0.0).rotation_range == 0.0  # explicit 0 wins
  assert _params(preset="natural").horizontal_flip
  assert _params(zoom_range=(0.8, 1.3)).zoom_range == (0.8, 1.3)


@pytest.mark.parametrize("field,value,message", [
    ("preset", "imagenet", "config.augment.preset='imagenet': expected one of"),
    ("rotation_range", -5.0, "config.augment.rotation_range=-5.0: expected a number >= 0"),
    ("zoom_range", 1.5, "config.augment.zoom_range=1.5: expected a float z in"),
    ("zoom_range", (1.2, 0.8), "config.augment.zoom_range=(1.2, 0.8)"),
    ("fill_mode", "mirror", "config.augment.fill_mode='mirror': expected one of"),
    ("contrast", 1.0, "config.augment.contrast=1.0"),
])
def test_bad_fields_name_the_field(field, value, message):
  with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
    _params(**{field: value})


def test_unknown_field_is_named():
  config = ml_collections.ConfigDict({"preset": "none", "rotation": 10.0})
  with pytest.raises(ValueError, match=r"unknown field\(s\) \['rotation'\]"):
    augment.from_config(config)
