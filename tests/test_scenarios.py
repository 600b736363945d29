"""Fault scenarios: each transform's semantics, determinism and errors."""

import numpy as np
import pytest

from cnn_val.data import scenarios
from cnn_val.configs import default


def _splits(n=2000, num_classes=10, seed=0):
  rng = np.random.default_rng(seed)
  def split(m):
    return {"image": rng.integers(0, 255, (m, 8, 8, 1), dtype=np.uint8),
            "label": np.repeat(np.arange(num_classes), m // num_classes).astype(np.int32)}
  return {"train": split(n), "validation": split(n // 4), "test": split(n // 4)}


def _scenario(**fields):
  scenario = default.get_config().data.scenario
  for k, v in fields.items():
    scenario[k] = v
  return scenario


def test_default_scenario_is_inactive():
  assert not scenarios.active(_scenario())


def test_long_tail_exponential_profile_keeps_validation_balanced():
  out = scenarios.apply(_scenario(imbalance_ratio=100.0), _splits(), 10)
  counts = np.bincount(out["train"]["label"], minlength=10)
  expected = np.ceil(200 * 100.0 ** (-np.arange(10) / 9)).astype(int)
  np.testing.assert_array_equal(counts, expected)
  assert counts[0] / counts[9] == 100
  np.testing.assert_array_equal(np.bincount(out["validation"]["label"]), [50] * 10)


def test_long_tail_with_chosen_minority_classes():
  out = scenarios.apply(_scenario(imbalance_ratio=20.0, minority_classes=(3, 7)), _splits(), 10)
  counts = np.bincount(out["train"]["label"], minlength=10)
  assert counts[3] == counts[7] == 10 and all(counts[c] == 200 for c in range(10) if c not in (3, 7))


@pytest.mark.parametrize("kind", ["symmetric", "pair"])
def test_label_noise_rate_and_kind(kind):
  splits = _splits(n=10000)
  out = scenarios.apply(_scenario(label_noise=0.3, label_noise_kind=kind), splits, 10)
  changed = out["train"]["label"] != splits["train"]["label"]
  assert 0.28 < changed.mean() < 0.32
  np.testing.assert_array_equal(out["train"]["image"], splits["train"]["image"])  # images untouched
  if kind == "pair":
    np.testing.assert_array_equal(out["train"]["label"][changed], (splits["train"]["label"][changed] + 1) % 10)
  else:  # every other class is reached
    assert len(np.unique(out["train"]["label"][changed] - splits["train"]["label"][changed])) > 10
  np.testing.assert_array_equal(out["validation"]["label"], splits["validation"]["label"])


def test_lighting_shift_changes_training_only():
  splits = _splits()
  out = scenarios.apply(_scenario(train_brightness=0.5, train_contrast=0.5), splits, 10)
  before, after = splits["train"]["image"].astype(float), out["train"]["image"].astype(float)
  np.testing.assert_allclose(after.mean(axis=(1, 2, 3)), 0.5 * before.mean(axis=(1, 2, 3)), atol=0.5)
  np.testing.assert_allclose(after.std(axis=(1, 2, 3)), 0.25 * before.std(axis=(1, 2, 3)), atol=0.5)
  np.testing.assert_array_equal(out["validation"]["image"], splits["validation"]["image"])


def test_duplicates_copy_validation_examples_into_training():
  splits = _splits()
  out = scenarios.apply(_scenario(duplicates=100), splits, 10)
  assert len(out["train"]["label"]) == 2100
  val = {bytes(img) : lab for img, lab in zip(splits["validation"]["image"], splits["validation"]["label"])}
  copied = [(bytes(img), lab) for img, lab in zip(out["train"]["image"][2000:], out["train"]["label"][2000:])]
  assert all(val[img] == lab for img, lab in copied) and len({img for img, _ in copied}) == 100


def test_orientation_pairs_make_class_b_an_upside_down_class_a_in_every_split():
  splits = _splits()
  out = scenarios.apply(_scenario(orientation_pairs=((7, 5),)), splits, 10)
  for name in ("train", "validation", "test"):
    a_images = {bytes(img[::-1]) for img in splits[name]["image"][splits[name]["label"] == 7]}
    b_images = out[name]["image"][out[name]["label"] == 5]
    assert len(b_images) == (splits[name]["label"] == 5).sum()
    assert all(bytes(img) in a_images for img in b_images)
    np.testing.assert_array_equal(out[name]["label"], splits[name]["label"])


def test_missing_classes_leave_training_only():
  splits = _splits()
  out = scenarios.apply(_scenario(missing_classes=(2, 7)), splits, 10)
  assert scenarios.active(_scenario(missing_classes=(2,)))
  assert np.bincount(out["train"]["label"], minlength=10).tolist() == [200, 200, 0, 200, 200, 200, 200, 0, 200, 200]
  assert out["validation"] is splits["validation"] and out["test"] is splits["test"]


def test_scenarios_are_seeded():
  a = scenarios.apply(_scenario(label_noise=0.2, imbalance_ratio=10.0), _splits(), 10)
  b = scenarios.apply(_scenario(label_noise=0.2, imbalance_ratio=10.0), _splits(), 10)
  c = scenarios.apply(_scenario(label_noise=0.2, imbalance_ratio=10.0, seed=1), _splits(), 10)
  np.testing.assert_array_equal(a["train"]["label"], b["train"]["label"])
  assert not np.array_equal(a["train"]["label"], c["train"]["label"])


@pytest.mark.parametrize("field,value,message", [
    ("orientation_pairs", ((3, 3),), "config.data.scenario.orientation_pairs"),
    ("imbalance_ratio", 0.5, "config.data.scenario.imbalance_ratio=0.5"),
    ("label_noise", 1.0, "config.data.scenario.label_noise=1.0"),
    ("label_noise_kind", "asym", "config.data.scenario.label_noise_kind='asym'"),
    ("train_brightness", 0.0, "config.data.scenario.train_brightness=0.0"),
    ("minority_classes", (12,), "config.data.scenario.minority_classes"),
    ("missing_classes", (10,), "config.data.scenario.missing_classes=(10,): expected classes in"),
])
def test_bad_fields_name_the_field(field, value, message):
  with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
    scenarios.validate(_scenario(**{field: value}), 10)


def test_the_coloured_variant_tints_every_split_and_the_shortcut_fixes_one_hue_in_training():
  import colorsys
  splits = _splits()
  out = scenarios.apply(_scenario(colorize=0.6, colour_shortcut_classes=(4,), colour_shortcut_hue=0.0), splits, 10)
  for name in ("train", "validation", "test"):
    assert out[name]["image"].shape == splits[name]["image"].shape[:3] + (3,)
    np.testing.assert_array_equal(out[name]["label"], splits[name]["label"])
  four = splits["train"]["label"] == 4
  red = np.asarray(colorsys.hsv_to_rgb(0.0, 0.6, 1.0), np.float32)
  expected = np.clip(np.round(splits["train"]["image"][four].astype(np.float32) * red), 0, 255)
  np.testing.assert_array_equal(out["train"]["image"][four], expected)
  # Elsewhere the hue is drawn per image: class 4's validation images are not all red.
  val_four = out["validation"]["image"][splits["validation"]["label"] == 4].astype(float)
  assert np.std(val_four[..., 1].mean(axis=(1, 2)) / np.maximum(val_four[..., 0].mean(axis=(1, 2)), 1)) > 0.1
  again = scenarios.apply(_scenario(colorize=0.6, colour_shortcut_classes=(4,)), splits, 10)
  np.testing.assert_array_equal(again["validation"]["image"], out["validation"]["image"])  # seeded
  with pytest.raises(ValueError, match="colour_shortcut_classes=.*unless config.data.scenario.colorize > 0"):
    scenarios.validate(_scenario(colour_shortcut_classes=(4,)), 10)
  with pytest.raises(ValueError, match="colour_shortcut_hue=1.0: expected a hue in"):
    scenarios.validate(_scenario(colorize=0.5, colour_shortcut_hue=1.0), 10)
  with pytest.raises(ValueError, match="made from grayscale"):
    scenarios.apply(_scenario(colorize=0.5), out, 10)


def test_shortcut_relights_the_chosen_classes_training_images_only():
  splits = _splits()
  out = scenarios.apply(_scenario(shortcut_classes=(4,), shortcut_brightness=0.5), splits, 10)
  four, other = splits["train"]["label"] == 4, splits["train"]["label"] != 4
  assert out["train"]["image"][four].mean() == pytest.approx(0.5 * splits["train"]["image"][four].mean(), rel=0.01)
  np.testing.assert_array_equal(out["train"]["image"][other], splits["train"]["image"][other])
  assert out["validation"] is splits["validation"]
  with pytest.raises(ValueError, match="config.data.scenario.shortcut_brightness=0.0"):
    scenarios.validate(_scenario(shortcut_classes=(4,), shortcut_brightness=0.0), 10)
