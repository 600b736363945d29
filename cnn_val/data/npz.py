"""A dataset given as numpy arrays in one `.npz` file: trains without TensorFlow or TFDS.

    config.data.name = 'npz'
    config.data.root = '/path/to/data.npz'

The file holds `train_image` (uint8 `[N, H, W, C]`, or `[N, H, W]` for one channel) and `train_label`
(integers in `[0, K)`), optionally `validation_image`/`validation_label`, `test_image`/`test_label` and
`class_names` (K strings; otherwise the classes are 0..max label). Without validation arrays the validation
split is held out of the end of train by `config.data.validation_fraction`, as for a TFDS dataset;
`max_train_examples`, `max_eval_examples` and `test_split=''` act as they do there. Problems are named before
training: a missing file or array, a length or shape mismatch, images that are not uint8.

Any TFDS dataset becomes such a file, its splits in TFDS's order, so that training on the file is training on
the dataset (the same examples, batches and metrics; `cnn_val/data/export_npz.py`, beside this reader, which
imports no TFDS):

    python -m cnn_val.data.export_npz --from_tfds=fashion_mnist --out=/tmp/fashion_mnist.npz [--data_dir=DIR]

This is how cnn_val runs where TensorFlow cannot be installed (an accelerator machine with JAX alone).
"""

from __future__ import annotations

import os
import zipfile

import numpy as np

from cnn_val.data.splits import Splits

FIELD = "config.data.root"
SPLITS = ("train", "validation", "test")


class NpzDataError(ValueError):
  """The .npz file cannot be used as it is; the message says what to change."""


def _open(path: str):
  if not path:
    raise NpzDataError(f"{FIELD} is empty: with config.data.name='npz' it names the .npz file (train_image, "
                       f"train_label, optionally test_image, test_label, class_names).")
  if not os.path.isfile(path):
    raise NpzDataError(f"{FIELD}={path!r}: no such file. Write one with `python -m cnn_val.data.export_npz "
                       f"--from_tfds=NAME --out={path}` or np.savez(path, train_image=..., train_label=...).")
  try:
    return np.load(path, allow_pickle=False)
  except (OSError, ValueError, zipfile.BadZipFile) as e:  # (ValueError: not an .npy or .npz at all)
    raise NpzDataError(f"{FIELD}={path!r} cannot be read as a .npz file ({type(e).__name__}: {e}).") from None


def _array(data, path: str, key: str) -> np.ndarray:
  try:
    return data[key]
  except ValueError as e:  # an object array (pickled), which np.load refuses without allow_pickle
    raise NpzDataError(f"{FIELD}={path!r}: {key} is stored as Python objects ({e}); save it as a numeric or "
                       f"string array (np.asarray(x, dtype=...)).") from None


def _split(data, path: str, name: str) -> dict[str, np.ndarray] | None:
  keys = (f"{name}_image", f"{name}_label")
  present = [k in data.files for k in keys]
  if not any(present):
    return None
  if not all(present):
    missing = keys[present.index(False)]
    raise NpzDataError(f"{FIELD}={path!r} has {keys[present.index(True)]!r} but no {missing!r}; a split needs "
                       f"both (it holds {sorted(data.files)}).")
  image, label = _array(data, path, keys[0]), _array(data, path, keys[1])
  if image.dtype != np.uint8:
    raise NpzDataError(f"{FIELD}={path!r}: {keys[0]} is {image.dtype}; expected uint8 pixels in [0, 255] "
                       f"(convert with (x * 255).round().astype(np.uint8) if they are floats in [0, 1]).")
  if image.ndim == 3:
    image = image[..., None]
  if image.ndim != 4:
    raise NpzDataError(f"{FIELD}={path!r}: {keys[0]} has shape {image.shape}; expected [N, H, W, C] or "
                       f"[N, H, W].")
  if label.ndim != 1 or not np.issubdtype(label.dtype, np.integer):
    raise NpzDataError(f"{FIELD}={path!r}: {keys[1]} is {label.dtype} of shape {label.shape}; expected one "
                       f"integer class per image.")
  if len(label) != len(image):
    raise NpzDataError(f"{FIELD}={path!r}: {len(image)} images in {keys[0]} but {len(label)} labels in "
                       f"{keys[1]}.")
  return {"image": image, "label": label.astype(np.int32)}


def load_splits(data_config) -> Splits:
  """The file's splits, as `sources.load_splits` gives a TFDS dataset's (but as arrays)."""
  path = os.path.expanduser(data_config.root)
  with _open(path) as data:
    splits = {name: _split(data, path, name) for name in SPLITS}
    class_names = (tuple(str(c) for c in _array(data, path, "class_names")) if "class_names" in data.files
                   else None)
  if splits["train"] is None:
    raise NpzDataError(f"{FIELD}={path!r} has no train_image and train_label arrays.")
  train = splits["train"]
  if splits["validation"] is None:
    frac = data_config.validation_fraction
    total = len(train["label"])
    num_val = int(round(total * frac)) if 0.0 < frac < 1.0 else 0  # (NaN fails the comparison too)
    if num_val == 0 or num_val == total:
      raise NpzDataError(f"config.data.validation_fraction={frac} leaves an empty train or validation split of "
                         f"the {total} training examples in {path}; use a fraction in (0, 1) that leaves both, "
                         f"or add validation_image and validation_label.")
    splits["validation"] = {k: v[total - num_val:] for k, v in train.items()}
    splits["train"] = {k: v[:total - num_val] for k, v in train.items()}
  if data_config.max_train_examples:
    splits["train"] = {k: v[:data_config.max_train_examples] for k, v in splits["train"].items()}
  if not data_config.test_split:
    splits["test"] = None
  for name in ("validation", "test"):
    if splits[name] is not None and data_config.max_eval_examples:
      splits[name] = {k: v[:data_config.max_eval_examples] for k, v in splits[name].items()}
  present = {name: s for name, s in splits.items() if s is not None}
  shapes = {s["image"].shape[1:] for s in present.values()}
  if len(shapes) > 1:
    raise NpzDataError(f"{FIELD}={path!r}: the splits' images differ in shape "
                       f"({ {name: s['image'].shape[1:] for name, s in present.items()} }).")
  if not len(splits["train"]["label"]):
    raise NpzDataError(f"{FIELD}={path!r}: train_image and train_label hold no examples.")
  largest = max(int(s["label"].max()) for s in present.values() if len(s["label"]))
  if class_names is None:
    class_names = tuple(str(i) for i in range(largest + 1))
  elif largest >= len(class_names):
    raise NpzDataError(f"{FIELD}={path!r}: a label is {largest} but class_names names {len(class_names)} "
                       f"classes; labels must lie in [0, {len(class_names)}).")
  count = lambda name: len(splits[name]["label"]) if splits[name] is not None else 0
  return Splits(train=splits["train"], validation=splits["validation"], test=splits["test"],
                num_train=count("train"), num_validation=count("validation"), num_test=count("test"),
                num_classes=len(class_names), image_shape=tuple(int(s) for s in shapes.pop()),
                class_names=class_names)
