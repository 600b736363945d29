"""Your own images: `root/<split>/<class_name>/*.png|jpg|jpeg` read through TFDS's `ImageFolder`.

    config.data.name = 'image_folder'
    config.data.root = '/path/to/root'       # holds train/ and optionally validation/ and test/
    config.data.image_size = 0               # 0 = keep (all images must then be one size); S or (H, W)
    config.data.channels = 0                 # 1 (grayscale) or 3 (RGB); 0 = as most training images are

Classes are the sorted union of the class folders of all splits; validation is carved from the end of
train (TFDS's ImageFolder lists each split in a fixed shuffled order) when there is no validation/ folder.
Problems are found before training and named: a missing root or train/, an empty class folder, an
unreadable image (its path), images of different sizes without `image_size` (two examples).
"""

from __future__ import annotations

import os

from absl import logging
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from cnn_val.data.splits import Splits

SPLITS = ("train", "validation", "test")
EXTENSIONS = (".png", ".jpg", ".jpeg")  # what TFDS's ImageFolder reads


class ImageFolderError(ValueError):
  """The image folder cannot be used as it is; the message says what to change."""


def _scan(root: str) -> dict[str, dict[str, list[str]]]:
  """{split: {class: [image paths]}} for the split folders present, checking the layout."""
  if not root or not os.path.isdir(root):
    raise ImageFolderError(f"config.data.root={root!r} is not a directory. Point it at a folder laid out as "
                           f"root/train/<class_name>/*.png (and optionally root/validation/, root/test/).")
  present = {s for s in os.listdir(root) if os.path.isdir(os.path.join(root, s))}
  if "train" not in present:
    raise ImageFolderError(f"{root} has no train/ folder (found {sorted(present) or 'nothing'}); expected "
                           f"root/train/<class_name>/*.png and optionally validation/ and test/.")
  unknown = present - set(SPLITS)
  if unknown:
    raise ImageFolderError(f"{root} has folders {sorted(unknown)} that are not splits; the split folders are "
                           f"{list(SPLITS)}. Move or rename them.")
  layout = {}
  for split in SPLITS:
    if split not in present:
      continue
    split_dir = os.path.join(root, split)
    layout[split] = {}
    for name in sorted(os.listdir(split_dir)):
      class_dir = os.path.join(split_dir, name)
      if not os.path.isdir(class_dir):
        continue
      files = sorted(os.path.join(class_dir, f) for f in os.listdir(class_dir) if f.lower().endswith(EXTENSIONS))
      for path in files:
        if not os.path.isfile(path):  # a dangling or circular symbolic link (os.path.isfile follows links)
          target = os.readlink(path) if os.path.islink(path) else "?"
          raise ImageFolderError(f"{path} is a broken or circular symbolic link (it points to {target!r}); "
                                 f"fix the link or remove it.")
      if not files:
        raise ImageFolderError(f"Class folder {class_dir} holds no .png/.jpg/.jpeg image. Add images or "
                               f"remove the folder (every class needs examples).")
      layout[split][name] = files
    if not layout[split]:
      raise ImageFolderError(f"{split_dir} has no class folders; expected {split_dir}/<class_name>/*.png.")
  return layout


def _find_problem(files: list[str], channels: int, resize: bool) -> str:
  """Decodes the files one by one (only after tf.data failed) to name the culprit."""
  shapes = {}
  for path in files:
    try:
      image = tf.io.decode_image(tf.io.read_file(path), channels=channels, expand_animations=False)
    except tf.errors.OpError as e:
      return f"{path} cannot be read as an image ({e.message.splitlines()[0]}); fix or remove it."
    shapes.setdefault(tuple(image.shape[:2]), path)
    if len(shapes) > 1 and not resize:
      (s1, p1), (s2, p2) = list(shapes.items())[:2]
      return (f"images differ in size ({p1} is {s1[0]}x{s1[1]}, {p2} is {s2[0]}x{s2[1]}); set "
              f"config.data.image_size to resize them all (e.g. {max(s1[0], s2[0])}).")
  return ""


CHANNEL_SAMPLE = 64  # images decoded to decide config.data.channels=0


def _majority_channels(layout) -> int:
  """config.data.channels=0: what most of a sample of the training images are (grayscale, with or without
  alpha: 1; RGB, RGBA or a palette: 3), so one RGBA or palette image cannot make a grayscale dataset RGB."""
  files = [p for paths in layout["train"].values() for p in paths]
  sample = files[::max(1, len(files) // CHANNEL_SAMPLE)][:CHANNEL_SAMPLE]
  gray = 0
  for path in sample:
    try:
      gray += tf.io.decode_image(tf.io.read_file(path), expand_animations=False).shape[-1] in (1, 2)
    except tf.errors.OpError as e:
      raise ImageFolderError(f"{path} cannot be read as an image ({e.message.splitlines()[0]}); fix or remove "
                             f"it.") from None
  channels = 1 if 2 * gray >= len(sample) else 3
  logging.info("config.data.channels=0: %d of %d sampled training images are grayscale -> %d channel(s); set "
               "config.data.channels to choose.", gray, len(sample), channels)
  return channels


def _size(image_size):
  if isinstance(image_size, int) and image_size >= 0:
    return (image_size, image_size) if image_size else None
  if isinstance(image_size, (tuple, list)) and len(image_size) == 2 and all(int(s) > 0 for s in image_size):
    return (int(image_size[0]), int(image_size[1]))
  raise ImageFolderError(f"config.data.image_size={image_size!r}: expected 0 (keep), S or (H, W).")


def _read(ds, root: str, layout, channels: int, resize: bool) -> dict[str, np.ndarray]:
  try:
    chunks = list(ds.batch(1024).as_numpy_iterator())  # batching fails on images of different sizes
  except tf.errors.OpError:  # a size mismatch, an undecodable or unreadable file: find and name it
    files = [p for classes in layout.values() for paths in classes.values() for p in paths]
    raise ImageFolderError(_find_problem(files, channels, resize)
                           or f"The images in {root} could not be read.") from None
  return {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}


def load_splits(data_config) -> Splits:
  """Reads the image folder once into memory (decoding and checking every image) and returns its splits."""
  root = os.path.expanduser(data_config.root)
  layout = _scan(root)
  class_names = tuple(sorted(set().union(*(set(classes) for classes in layout.values()))))
  size = _size(data_config.image_size)
  channels = data_config.channels
  if channels not in (0, 1, 3):
    raise ImageFolderError(f"config.data.channels={channels!r}: expected 1 (grayscale), 3 (RGB) or 0 (as most "
                           f"training images are stored).")
  if not channels:
    channels = _majority_channels(layout)
  builder = tfds.ImageFolder(root, shape=(None, None, channels))
  # TFDS labels classes by the sorted class folders of all splits: the same order as class_names.
  assert tuple(builder.info.features["label"].names) == class_names

  def read(name):
    def convert(ex):
      image = ex["image"]
      if size is not None:
        image = tf.cast(tf.clip_by_value(tf.round(tf.image.resize(image, size, antialias=True)), 0, 255),
                        tf.uint8)
      return {"image": image, "label": tf.cast(ex["label"], tf.int32)}
    ds = builder.as_dataset(split=name, shuffle_files=False).map(convert, num_parallel_calls=tf.data.AUTOTUNE)
    return _read(ds, root, layout, channels, size is not None)

  splits = {name: read(name) for name in layout}
  if "validation" not in splits:  # the end of train (TFDS lists each split in a fixed shuffled order)
    total = len(splits["train"]["label"])
    num_val = int(round(total * data_config.validation_fraction))
    if num_val == 0 or num_val == total:
      raise ImageFolderError(f"config.data.validation_fraction={data_config.validation_fraction} leaves an "
                             f"empty train or validation split of the {total} images in {root}/train; add "
                             f"images or a validation/ folder.")
    train = splits["train"]
    splits["train"] = {k: v[:total - num_val] for k, v in train.items()}
    splits["validation"] = {k: v[total - num_val:] for k, v in train.items()}
  if data_config.max_train_examples:
    splits["train"] = {k: v[:data_config.max_train_examples] for k, v in splits["train"].items()}
  for name in ("validation", "test"):
    if name in splits and data_config.max_eval_examples:
      splits[name] = {k: v[:data_config.max_eval_examples] for k, v in splits[name].items()}
  shapes = {v["image"].shape[1:] for v in splits.values()}
  if len(shapes) > 1:
    raise ImageFolderError(f"The splits of {root} hold images of different sizes {sorted(shapes)}; set "
                           f"config.data.image_size to resize them all.")
  count = lambda name: len(splits[name]["label"]) if name in splits else 0
  return Splits(
      train=splits["train"], validation=splits["validation"], test=splits.get("test"),
      num_train=count("train"), num_validation=count("validation"), num_test=count("test"),
      num_classes=len(class_names), image_shape=tuple(int(s) for s in shapes.pop()), class_names=class_names)
