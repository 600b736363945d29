"""Finds, prepares and opens a TFDS image-classification dataset, failing fast when it cannot be had.

(`config.data.name='image_folder'` reads your own image files, `'npz'` numpy arrays without TensorFlow; both
modules are beside this one. TensorFlow is imported only for an image folder, or to decode a TFDS split the
first time: the decoded arrays are cached beside the prepared files, `ARRAY_CACHE`.)

The offline default, Fashion-MNIST, is prepared from Debian's files on first use. Any other TFDS dataset is
downloaded by TFDS where the internet is reachable; offline, TFDS would retry DNS for minutes, so we probe
first and fail within seconds with a message that says what is missing and how to get it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import zipfile

from absl import logging
import numpy as np

from cnn_val import cli, rundir
from cnn_val.data import npz, pipeline
from cnn_val.data.splits import Splits

# Where TFDS downloads from (its GCS mirror); reachable means "TFDS can download".
DOWNLOAD_PROBE = ("storage.googleapis.com", 443)
PROBE_TIMEOUT_S = 5.0


class DatasetUnavailableError(RuntimeError):
  """The dataset is neither prepared nor obtainable here; the message says how to get it."""


def internet_reachable(host_port=None, timeout: float = PROBE_TIMEOUT_S) -> bool:
  host, port = host_port or DOWNLOAD_PROBE
  try:
    with socket.create_connection((host, port), timeout=timeout):
      return True
  except OSError:
    return False


def get_builder(data_config):
  """A prepared TFDS builder for `config.data.name`, preparing or downloading it if needed and possible."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  from cnn_val.data import fashion_mnist_offline  # pylint: disable=import-outside-toplevel  (TFDS)
  name = data_config.name
  data_dir = data_config.data_dir or None
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise ValueError(f"config.data.name={name!r} is not a TFDS dataset. Use a TFDS name such as "
                     f"'fashion_mnist', 'mnist' or 'cifar10'.") from e
  if builder.is_prepared():
    return builder
  where = builder.data_dir
  if name == "fashion_mnist" and fashion_mnist_offline.local_files() is not None:
    logging.info("Preparing fashion_mnist from %s into %s (once).", fashion_mnist_offline.DEBIAN_DIR, where)
    cli.tensorflow()  # TFDS writes through it: imported first, with the GPUs hidden where an entry point asked
    fashion_mnist_offline.prepare(data_dir)
    return tfds.builder(name, data_dir=data_dir)
  hint = (f" For fashion_mnist offline: `apt-get install {fashion_mnist_offline.DEBIAN_PACKAGE}`."
          if name == "fashion_mnist" else "")
  if not data_config.download:
    raise DatasetUnavailableError(
        f"Dataset {name!r} is not prepared in {where} and config.data.download=False. Prepare it on a "
        f"machine with internet (`tfds build {name} --data_dir=DIR`), copy DIR here and set "
        f"config.data.data_dir=DIR, or allow the download.{hint}")
  if not internet_reachable():
    raise DatasetUnavailableError(
        f"Dataset {name!r} is not prepared in {where}, and it cannot be downloaded: "
        f"{DOWNLOAD_PROBE[0]}:{DOWNLOAD_PROBE[1]} is unreachable (no internet?). Prepare it on a machine "
        f"with internet (`tfds build {name} --data_dir=DIR`), copy DIR here and set "
        f"config.data.data_dir=DIR.{hint}")
  cli.tensorflow()
  builder.download_and_prepare()
  return builder


def _supervised(builder, split: str, max_examples: int):
  """(an unbatched tf.data dataset of {'image', 'label' int32}, its size). No TFDS auto-cache: cnn_val reads a
  split once, into numpy arrays (`_arrays`, `pipeline.to_arrays`)."""
  tf = cli.tensorflow()
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  ds = builder.as_dataset(split=split, shuffle_files=False, read_config=tfds.ReadConfig(try_autocache=False))
  n = builder.info.splits[split].num_examples
  if max_examples:
    ds, n = ds.take(max_examples), min(n, max_examples)
  ds = ds.map(lambda ex: {"image": ex["image"], "label": tf.cast(ex["label"], tf.int32)},
              num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return ds, n


# The decoded splits, beside the prepared dataset's files (`<data_dir>/<name>/<version>/cnn_val_arrays/`): a
# run reads them with numpy, without TensorFlow, whose import alone costs 6-10 s of every run's start on a
# 2-core CPU, and without decoding the PNGs again. Deleting the folder is safe (the next run writes it again).
ARRAY_CACHE = "cnn_val_arrays"
_ARRAY_CACHE_FORMAT = 1
_warned_no_cache = False


def _cache_key(builder, split: str) -> str:
  """What a split's cached arrays were decoded from: the split and every prepared file's name, size and
  modification time (a dataset prepared again invalidates its cache)."""
  folder = os.fspath(builder.data_dir)
  files = sorted((e.name, e.stat().st_size, e.stat().st_mtime_ns) for e in os.scandir(folder) if e.is_file())
  return json.dumps({"format": _ARRAY_CACHE_FORMAT, "split": split, "files": files})


def _arrays(builder, split: str, num_classes: int, split_name: str) -> dict:
  """The whole named split as numpy arrays {'image', 'label' int32}, in TFDS's order: from the array cache
  where it holds this split of these files, else decoded through tf.data (`_supervised`) and written to the
  cache for the next run. (Slices and caps are taken from these arrays, so one file per split serves every
  `max_train_examples` and validation fraction.) A data_dir that is remote, read-only or full is read through
  tf.data every time (one warning); nothing fails for the cache."""
  folder = os.fspath(builder.data_dir)
  if not rundir.is_local(folder):
    return pipeline.to_arrays(_supervised(builder, split, 0)[0], num_classes, split_name)
  key = _cache_key(builder, split)
  file = os.path.join(folder, ARRAY_CACHE, f"{re.sub(r'[^A-Za-z0-9_]+', '_', split)}-"
                                           f"{hashlib.sha1(key.encode()).hexdigest()[:12]}.npz")
  try:
    with np.load(file, allow_pickle=False) as cached:
      if str(cached["key"]) == key:
        return pipeline.to_arrays({"image": cached["image"], "label": cached["label"]}, num_classes, split_name)
  except FileNotFoundError:
    pass
  except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:  # torn or foreign: decoded again
    logging.warning("Ignoring the unreadable array cache %s (%s); decoding the split again.", file, e)
  arrays = pipeline.to_arrays(_supervised(builder, split, 0)[0], num_classes, split_name)
  try:
    rundir.atomically(file, "wb", lambda f: np.savez(f, key=np.array(key), **arrays))
  except OSError as e:
    global _warned_no_cache
    if not _warned_no_cache:
      logging.warning("No array cache beside the dataset (%s): each run decodes it through TensorFlow again.", e)
      _warned_no_cache = True
  return arrays


def _rows(arrays: dict, start: int, stop: int) -> dict:
  return {k: v[start:stop] for k, v in arrays.items()}


def load_splits(data_config) -> Splits:
  """Train, validation (held out of the end of the training split) and test splits of the dataset."""
  if data_config.name == "npz":
    return npz.load_splits(data_config)
  if data_config.name == "image_folder":
    cli.tensorflow()  # imported with the GPUs hidden from it where an entry point asked
    from cnn_val.data import image_folder  # pylint: disable=import-outside-toplevel  (TensorFlow)
    return image_folder.load_splits(data_config)
  builder = get_builder(data_config)
  info = builder.info
  features = info.features
  if "image" not in features or "label" not in features:
    raise ValueError(f"config.data.name={data_config.name!r} has features {sorted(features.keys())}; "
                     f"cnn_val needs an image-classification dataset with 'image' and 'label'.")
  train_split = data_config.train_split
  if train_split not in info.splits:
    raise ValueError(f"config.data.train_split={train_split!r} is not a split of {data_config.name!r}; "
                     f"it has {sorted(info.splits.keys())}.")
  frac = data_config.validation_fraction
  if not 0.0 < frac < 1.0:
    raise ValueError(f"config.data.validation_fraction={frac}: expected a fraction in (0, 1).")
  total = info.splits[train_split].num_examples
  num_val = int(round(total * frac))
  num_train = total - num_val
  if num_val == 0 or num_train == 0:
    raise ValueError(f"config.data.validation_fraction={frac} leaves an empty train or validation split "
                     f"of the {total} examples in {train_split!r}.")
  if data_config.max_train_examples:
    num_train = min(num_train, data_config.max_train_examples)
  label = features["label"]
  if data_config.test_split and data_config.test_split not in info.splits:
    raise ValueError(f"config.data.test_split={data_config.test_split!r} is not a split of "
                     f"{data_config.name!r}; it has {sorted(info.splits.keys())}. Use '' for none.")
  whole = _arrays(builder, train_split, label.num_classes, "train")  # TFDS's train[:N] is its first N, in order
  cap = data_config.max_eval_examples or None
  train = _rows(whole, 0, num_train)
  validation = _rows(_rows(whole, total - num_val, total), 0, cap)
  test = (_rows(_arrays(builder, data_config.test_split, label.num_classes, "test"), 0, cap)
          if data_config.test_split else None)
  num_train, num_val = len(train["label"]), len(validation["label"])
  num_test = len(test["label"]) if test is not None else 0
  return Splits(
      train=train, validation=validation, test=test, num_train=num_train, num_validation=num_val,
      num_test=num_test, num_classes=label.num_classes, image_shape=tuple(features["image"].shape),
      class_names=tuple(label.names))
