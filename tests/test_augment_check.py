"""The augmentation check: a transform that maps one class onto another is found on the data itself, one
that keeps the labels is not, and the result is shared by the runs of a sweep."""

import json

import numpy as np
import pytest

from cnn_val import audit, augment, augment_check, knn
from cnn_val.configs import default


def _shapes(n_per_class: int, seed: int, size: int = 12) -> dict:
  """Three classes: an L (a bar on the left, one along the bottom), its mirror image, and a centred plus
  sign; each jittered by up to a pixel and noised. A horizontal flip turns an L into its mirror (another
  class); a vertical flip turns it into a shape no class has."""
  rng = np.random.default_rng(seed)
  images, labels = [], []
  for label in range(3):
    for _ in range(n_per_class):
      image = np.zeros((size, size), np.float32)
      if label == 2:
        image[size // 2 - 1:size // 2 + 1, 2:size - 2] = 1
        image[2:size - 2, size // 2 - 1:size // 2 + 1] = 1
      else:
        image[2:size - 2, 2:4] = 1
        image[size - 4:size - 2, 2:size - 3] = 1
        if label == 1:
          image = image[:, ::-1]
      image = np.roll(image, tuple(rng.integers(-1, 2, 2)), axis=(0, 1))
      image = np.clip(image + rng.normal(0, 0.35, image.shape), 0, 1)
      images.append(image)
      labels.append(label)
  return {"image": (np.stack(images)[..., None] * 255).astype(np.uint8), "label": np.array(labels, np.int32)}


def _params(**fields):
  config = default.get_config().augment
  for name, value in fields.items():
    config[name] = value
  return augment.from_config(config)


def test_a_flip_that_maps_a_class_onto_another_is_label_destroying_and_one_that_does_not_is_not():
  train, validation = _shapes(200, seed=0), _shapes(100, seed=1)
  report = augment_check.check(train, validation, _params(horizontal_flip=True, vertical_flip=True,
                                                          rotation_range=10.0), 3)
  assert set(report["transforms"]) == {"horizontal_flip", "vertical_flip", "rotation_range"}
  assert report["validation_examples"] == 300 and report["train_examples"] == 600
  assert report["train_queries"] == 600 and report["queries"] == 900  # every training image judged too
  h, v, r = (report["transforms"][k] for k in ("horizontal_flip", "vertical_flip", "rotation_range"))
  assert h["label_destroying"] and h["p_value"] < augment_check.P_VALUE, h
  assert h["error_increase"] >= augment_check.ERROR_INCREASE and h["lost"] > 10 * max(h["won"], 1)
  assert {(a, b) for a, b, _ in h["pairs"][:2]} == {(0, 1), (1, 0)}  # the Ls and their mirrors, both ways
  assert h["lost_by_class"][2] == 0 and h["errors_with_copies"] == report["errors"] + h["lost"] - h["won"]
  assert h["recognised"] < report["accuracy"] - 0.3  # a flipped L reads as its mirror
  assert not v["label_destroying"] and not r["label_destroying"], (v, r)
  assert r["recognised"] > 0.8 * report["accuracy"]


def test_a_training_image_judged_leaves_itself_and_its_copy_out():
  reference = np.array([[0.0], [1.0], [0.1], [0.9]], np.float32)  # two images, then their copies
  labels = np.array([0, 1, 0, 1])
  queries = reference[:1]
  nearest = knn.nearest_labels
  assert nearest(reference, labels, queries)[0] == 0  # itself
  assert nearest(reference, labels, queries, np.array([[0, 2]]))[0] == 1  # neither itself nor its copy
  assert nearest(reference, labels, queries, np.array([[-1, -1]]))[0] == 0  # a validation image: nothing left out


def test_only_the_geometric_transforms_that_are_on_are_tested():
  assert augment_check.transforms(_params()) == {}
  assert augment_check.transforms(_params(brightness=0.2, contrast=0.3)) == {}  # lighting keeps the labels
  assert augment_check.check({}, {}, _params(brightness=0.2), 3) is None
  chars = augment_check.transforms(_params(preset="characters"))
  assert chars == {"rotation_range": {"rotation_range": 10.0},
                   "shift": {"width_shift_range": 0.1, "height_shift_range": 0.1},
                   "zoom_range": {"zoom_range": (0.9, 1.1)}}


def test_large_images_are_averaged_down_and_pixel_shifts_follow():
  images = np.zeros((2, 70, 64, 1), np.uint8)
  images[:, :35] = 255
  small, factor = knn.downsample(images)
  assert factor == 3 and small.shape == (2, 23, 21, 1)
  np.testing.assert_allclose(small[0, :11, :, 0], 1.0)
  np.testing.assert_allclose(small[0, 12:, :, 0], 0.0)
  # A shift of 6 pixels of the full image is 2 of the averaged one (the width shift moves the rows, as in training
  # and Keras: augment.keras_matrix).
  dot = np.zeros((16, 23, 21, 1), np.float32)
  dot[:, 11, 10] = 1.0
  shift = {"width_shift_range": 6.0, "height_shift_range": 0.0}
  moved = augment_check._transform(dot, "shift", shift, factor, "constant", 0.0)  # pylint: disable=protected-access
  offsets = {tuple(int(d) for d in np.argwhere(m[..., 0] > 0.99)[0] - (11, 10)) for m in moved}
  assert offsets == {(2, 0), (-2, 0)}, offsets


def test_the_check_is_shared_through_the_audit_cache(tmp_path, monkeypatch):
  arrays = {"train": _shapes(30, seed=0), "validation": _shapes(10, seed=1)}
  params = _params(horizontal_flip=True)
  monkeypatch.setenv(audit.CACHE_ENV, str(tmp_path))
  first = augment_check.cached_check(arrays, params, 3)
  calls = []
  monkeypatch.setattr(augment_check, "check", lambda *a, **k: calls.append(1) or {"recomputed": True})
  assert augment_check.cached_check(arrays, params, 3)["transforms"] == first["transforms"] and not calls
  assert augment_check.cached_check(arrays, _params(vertical_flip=True), 3) == {"recomputed": True}
  rotation = augment_check.cached_check(arrays, _params(rotation_range=30.0), 3)
  calls.clear()
  for changed in (_params(rotation_range=30.0, fill_mode="constant"), _params(rotation_range=30.0, cval=0.5)):
    assert augment_check.cached_check(arrays, changed, 3) == {"recomputed": True}  # another warp: its own check
  assert len(calls) == 2 and rotation == {"recomputed": True}
  assert augment_check.cached_check(arrays, _params(), 3) is None


def test_an_empty_split_has_no_check():
  empty = {"image": np.zeros((0, 12, 12, 1), np.uint8), "label": np.zeros((0,), np.int32)}
  assert augment_check.check(_shapes(10, seed=0), empty, _params(horizontal_flip=True), 3) is None


def test_the_rule_reads_what_the_check_writes(tmp_path):
  """The check's own output, not a hand-made file, through the rule: the flips of the mirrored Ls."""
  from cnn_val import rundir  # pylint: disable=import-outside-toplevel
  from cnn_val.doctor import rules  # pylint: disable=import-outside-toplevel
  config = default.get_config()
  config.augment.horizontal_flip = True
  workdir = str(tmp_path)
  rundir.write_or_check_config(workdir, config)
  row = {"step": 10, "epoch": 1, "lr": 1e-3, "train_loss": 0.2, "train_accuracy": 0.95, "val_loss": 0.2,
         "val_accuracy": 0.94, "val_per_class_recall": [0.94] * 3,
         "val_confusion": (np.eye(3, dtype=int) * 90).tolist()}
  with open(tmp_path / rundir.METRICS_FILE, "w") as f:
    f.write(json.dumps(row) + "\n")
  report = augment_check.check(_shapes(200, seed=0), _shapes(100, seed=1), _params(horizontal_flip=True), 3)
  rundir.write_json(workdir, rundir.AUGMENT_CHECK_FILE, report)
  finding = next(f for f in rules.diagnose(workdir)["findings"] if f["cause"] == "harmful_augmentation")
  assert finding["severity"] == "high" and finding["fix"]["overrides"] == {"config.augment.horizontal_flip": False}
  assert f"{report['transforms']['horizontal_flip']['lost']} more images wrong" in finding["explanation"]
  assert f"of {report['queries']} judged" in finding["explanation"]
  assert "horizontal_flip" in finding["fix"]["summary"]


def test_a_rotation_range_past_180_degrees_is_tested_turned_over():
  image = np.zeros((4, 9, 9, 1), np.float32)
  image[:, 1:4, 4, 0] = 1.0  # a bar above the centre
  for rotation in (180.0, 270.0, 360.0):
    values = {"rotation_range": rotation}
    copies = augment_check._transform(image, "rotation_range", values, 1, "constant", 0.0)
    np.testing.assert_allclose(copies, image[:, ::-1, ::-1], atol=1e-4)  # the bar below the centre


def test_float_images_are_kept_on_their_scale():
  images = np.full((3, 8, 8, 1), 0.5, np.float32)
  downsample = knn.downsample
  assert downsample(images)[0].max() == pytest.approx(0.5)
  assert downsample((images * 255).astype(np.uint8))[0].max() == pytest.approx(127 / 255)
  thin = np.zeros((2, 200, 2, 1), np.uint8)  # the factor never leaves the shorter side without a pixel
  assert downsample(thin)[0].shape == (2, 100, 1, 1)


@pytest.mark.parametrize("fill_mode", ["nearest", "constant"])
def test_rotation_copies_are_the_largest_rotation_either_way(fill_mode):
  image = np.zeros((1, 9, 9, 1), np.float32)
  image[0, 1:4, 4, 0] = 1.0  # a bar above the centre
  copies = augment_check._transform(np.repeat(image, 8, axis=0), "rotation_range",  # pylint: disable=protected-access
                                    {"rotation_range": 90.0}, 1, fill_mode, 0.0)
  assert all(abs(c[4, :4, 0].sum() - c[4, 5:, 0].sum()) > 2.0 for c in copies)  # a bar to the left or right
  assert {bool(c[4, :4, 0].sum() > c[4, 5:, 0].sum()) for c in copies} == {True, False}  # both signs drawn


def test_a_run_with_flips_writes_the_check_and_the_doctor_writes_a_missing_one(tiny_config, tmp_path):
  from cnn_val import doctor, rundir, train  # pylint: disable=import-outside-toplevel
  tiny_config.num_epochs = 1
  tiny_config.augment.horizontal_flip = True
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(tiny_config, workdir)
  written = rundir.read_json(workdir, rundir.AUGMENT_CHECK_FILE)
  assert list(written["transforms"]) == ["horizontal_flip"]
  assert written["validation_examples"] > 0 and 0 <= written["transforms"]["horizontal_flip"]["p_value"] <= 1
  assert "augmentation check" in rundir.read_json(workdir, rundir.TIMING_FILE)["phases"]
  (tmp_path / "run" / rundir.AUGMENT_CHECK_FILE).unlink()
  audit = rundir.read_json(workdir, rundir.AUDIT_FILE)
  reference = audit.pop("pixel_reference")  # an audit written before the audit measured the pixel reference
  rundir.write_json(workdir, rundir.AUDIT_FILE, audit)
  doctor.examine(workdir)
  assert rundir.read_json(workdir, rundir.AUGMENT_CHECK_FILE)["transforms"].keys() == written["transforms"].keys()
  assert rundir.read_json(workdir, rundir.AUDIT_FILE)["pixel_reference"] == reference  # added back from the data


@pytest.mark.parametrize("mirrored,flips_kept", [(True, False), (False, True)])
def test_the_lever_menu_offers_flips_on_colour_images_only_where_they_keep_the_labels(tmp_path, mirrored,
                                                                                     flips_kept):
  """A colour dataset gets the `natural` preset from the lever menu; where one class is the mirror image of
  another (colour digits or text), the check on its data takes the preset's flips out."""
  from cnn_val import rundir  # pylint: disable=import-outside-toplevel
  from cnn_val.doctor import levers, run_view  # pylint: disable=import-outside-toplevel
  train, validation = _shapes(100, seed=0), _shapes(40, seed=1)
  if not mirrored:  # class 1 the L turned by 180 degrees instead: a flip maps no class onto another
    for split in (train, validation):
      ones = split["label"] == 1
      split["image"][ones] = split["image"][ones][:, ::-1]  # the mirror image upside down
  colour = {k: {"image": np.repeat(v["image"], 3, axis=-1), "label": v["label"]}
            for k, v in (("train", train), ("validation", validation))}
  path = str(tmp_path / "shapes.npz")
  np.savez(path, train_image=colour["train"]["image"], train_label=colour["train"]["label"],
           validation_image=colour["validation"]["image"], validation_label=colour["validation"]["label"])
  config = default.get_config()
  config.data.name, config.data.root, config.data.test_split = "npz", path, ""
  workdir = str(tmp_path / "run")
  rundir.write_or_check_config(workdir, config)
  rundir.write_json(workdir, rundir.AUDIT_FILE, {"splits": {"train": {"channel_means": [0.2, 0.2, 0.2]}}})
  menu = {a.name: dict(a.overrides) for a, _ in levers.menu_arms(run_view.Run(workdir))}
  assert menu["augment"]["augment.preset"] == "natural"
  assert ("augment.horizontal_flip" not in menu["augment"]) == flips_kept, menu["augment"]


def test_writing_the_check_warns_of_each_transform_that_changes_the_labels(tmp_path, caplog):
  import logging  # pylint: disable=import-outside-toplevel
  from cnn_val import rundir  # pylint: disable=import-outside-toplevel
  report = {"seconds": 0.5, "transforms": {
      "horizontal_flip": {"label_destroying": True, "error_increase": 0.24, "p_value": 6e-15},
      "shift": {"label_destroying": False, "error_increase": 0.11, "p_value": 4e-6}}}
  with caplog.at_level(logging.INFO):
    augment_check.write(str(tmp_path), report)
  assert rundir.read_json(str(tmp_path), rundir.AUGMENT_CHECK_FILE) == report
  warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
  assert len(warnings) == 1 and "horizontal_flip" in warnings[0] and "shift" not in warnings[0]
  caplog.clear()
  with caplog.at_level(logging.INFO):
    augment_check.write(str(tmp_path), {**report, "transforms": {"shift": report["transforms"]["shift"]}})
  assert not [r for r in caplog.records if r.levelno == logging.WARNING]
  assert any("every transform keeps the labels" in r.getMessage() for r in caplog.records)
