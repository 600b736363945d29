"""Image folders through TFDS: layouts, grayscale/RGB, resize, carved validation, and named errors."""

import os

import numpy as np
import pytest
import tensorflow as tf

from cnn_val import train
from cnn_val.data import image_folder, pipeline, sources
from cnn_val.configs import default


def _write(path, image):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "wb") as f:
    f.write(tf.io.encode_png(image).numpy())


def _folder(root, splits=("train", "test"), per_class=30, size=(12, 12), channels=1, classes=("bar", "dot")):
  """Class 'bar': a bright row; class 'dot': a bright pixel block; noise elsewhere."""
  rng = np.random.default_rng(0)
  for split in splits:
    for c, name in enumerate(classes):
      for i in range(per_class):
        image = rng.integers(0, 60, size + (channels,), dtype=np.uint8)
        if c == 0:
          image[size[0] // 2] = 250
        else:
          image[2:5, 2:5] = 250
        _write(os.path.join(root, split, name, f"{i}.png"), image)
  return str(root)


def _config(root, **fields):
  config = default.get_config().data
  config.name = "image_folder"
  config.root = root
  for k, v in fields.items():
    config[k] = v
  return config


def test_grayscale_folder_with_carved_validation(tmp_path):
  splits = sources.load_splits(_config(_folder(tmp_path)))
  assert splits.class_names == ("bar", "dot") and splits.num_classes == 2
  assert splits.image_shape == (12, 12, 1)
  assert (splits.num_train, splits.num_validation, splits.num_test) == (54, 6, 60)
  arrays = pipeline.to_arrays(splits.train, 2, "train")
  assert arrays["image"].dtype == np.uint8 and arrays["image"].shape == (54, 12, 12, 1)
  bright_row = arrays["image"][:, 6, :, 0].mean(axis=1) > 200
  np.testing.assert_array_equal(bright_row, arrays["label"] == 0)  # labels follow the class folders


def test_rgb_folder_with_validation_split_and_resize(tmp_path):
  root = _folder(tmp_path, splits=("train", "validation"), size=(10, 14), channels=3)
  splits = sources.load_splits(_config(root, image_size=8))
  assert splits.image_shape == (8, 8, 3) and splits.num_validation == 60 and splits.test is None
  as_gray = sources.load_splits(_config(root, channels=1))
  assert as_gray.image_shape == (10, 14, 1)


def test_training_on_an_image_folder(tmp_path):
  config = default.get_config()
  config.data = _config(_folder(tmp_path / "data", per_class=64))
  config.num_epochs, config.batch_size, config.eval_batch_size, config.num_devices = 4, 16, 16, 1
  config.augment.preset = "natural"
  row = train.train_and_evaluate(config, str(tmp_path / "run"))
  assert row["val_accuracy"] > 0.9 and "test_accuracy" in row


def test_empty_class_folder_is_named(tmp_path):
  root = _folder(tmp_path)
  os.makedirs(os.path.join(root, "train", "ghost"))
  with pytest.raises(image_folder.ImageFolderError, match=r"train/ghost holds no .png/.jpg/.jpeg image"):
    sources.load_splits(_config(root))


def test_unreadable_file_is_named(tmp_path):
  root = _folder(tmp_path)
  broken = os.path.join(root, "train", "dot", "broken.png")
  with open(broken, "wb") as f:
    f.write(b"not a png at all")
  with pytest.raises(image_folder.ImageFolderError, match=r"broken.png cannot be read as an image"):
    sources.load_splits(_config(root))


def test_mixed_sizes_without_resize_are_named(tmp_path):
  root = _folder(tmp_path)
  _write(os.path.join(root, "train", "bar", "big.png"), np.zeros((20, 20, 1), np.uint8))
  with pytest.raises(image_folder.ImageFolderError, match=r"images differ in size .*set config.data.image_size"):
    sources.load_splits(_config(root))
  assert sources.load_splits(_config(root, image_size=12)).image_shape == (12, 12, 1)


def test_missing_root_and_missing_train_are_named(tmp_path):
  with pytest.raises(image_folder.ImageFolderError, match=r"config.data.root=.* is not a directory"):
    sources.load_splits(_config(str(tmp_path / "nowhere")))
  os.makedirs(tmp_path / "only" / "test" / "a")
  with pytest.raises(image_folder.ImageFolderError, match=r"has no train/ folder"):
    sources.load_splits(_config(str(tmp_path / "only")))


@pytest.mark.parametrize("target", ["nowhere.png", "loop.png"])
def test_broken_and_circular_symlinks_are_named(tmp_path, target):
  root = _folder(tmp_path)
  link = os.path.join(root, "train", "dot", "loop.png" if target == "loop.png" else "dangling.png")
  os.symlink(target, link)  # loop.png -> loop.png is circular; nowhere.png does not exist
  with pytest.raises(image_folder.ImageFolderError, match=rf"{os.path.basename(link)} is a broken or circular "
                                                          rf"symbolic link \(it points to '{target}'\)"):
    sources.load_splits(_config(root))


def test_one_rgba_image_does_not_make_a_grayscale_folder_rgb(tmp_path, caplog):
  import logging  # pylint: disable=import-outside-toplevel
  caplog.set_level(logging.INFO)
  root = _folder(tmp_path)
  first = sorted(os.listdir(os.path.join(root, "train", "bar")))[0]
  _write(os.path.join(root, "train", "bar", first), np.full((12, 12, 4), 200, np.uint8))  # the first image: RGBA
  splits = sources.load_splits(_config(root))
  assert splits.image_shape == (12, 12, 1)
  assert "grayscale -> 1 channel(s)" in caplog.text
