"""Prepares Fashion-MNIST from Debian's `dataset-fashion-mnist` package into TFDS's own `fashion_mnist` layout.

The builder below is TFDS's `FashionMNIST` with one change: its split generators read the local IDX files
instead of downloading them. It writes exactly what TFDS would (same name, version, features and splits), so
the unchanged `tfds.load('fashion_mnist', data_dir=..., download=False)` reads the result.
"""

from __future__ import annotations

import fcntl
import gzip
import os
import struct

import tensorflow_datasets as tfds
from tensorflow_datasets.image_classification import mnist as tfds_mnist

DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
DEBIAN_PACKAGE = "dataset-fashion-mnist"
_FILES = {
    "train_data": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_data": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}


def local_files(source_dir: str | None = None) -> dict[str, str] | None:
  """The four gzipped IDX files if they are all present in `source_dir` (default DEBIAN_DIR), else None."""
  source_dir = source_dir or DEBIAN_DIR
  paths = {k: os.path.join(source_dir, v) for k, v in _FILES.items()}
  return paths if all(os.path.isfile(p) for p in paths.values()) else None


class LocalFashionMNIST(tfds_mnist.FashionMNIST, skip_registration=True):
  """TFDS's FashionMNIST reading the gzipped IDX files from a local folder."""

  name = "fashion_mnist"  # the layout and name TFDS's own builder uses

  def __init__(self, *, source_dir: str | None = None, **kwargs):
    self._source_dir = source_dir
    super().__init__(**kwargs)

  def _split_generators(self, dl_manager):
    files = local_files(self._source_dir)
    if files is None:
      raise FileNotFoundError(missing_message(self._source_dir))
    extracted = dl_manager.extract(files)  # gunzip into the TFDS extraction folder; no network
    return [
        tfds.core.SplitGenerator(
            name=split,
            gen_kwargs=dict(num_examples=_idx_count(files[f"{prefix}_labels"]),
                            data_path=extracted[f"{prefix}_data"], label_path=extracted[f"{prefix}_labels"]))
        for split, prefix in ((tfds.Split.TRAIN, "train"), (tfds.Split.TEST, "test"))
    ]


def _idx_count(gz_path: str) -> int:
  """The item count in an IDX file's header (60,000/10,000 for the real files)."""
  with gzip.open(gz_path, "rb") as f:
    magic, count = struct.unpack(">II", f.read(8))
  if magic >> 8 != 0x08:  # IDX type byte 0x08 = unsigned byte data
    raise ValueError(f"{gz_path} is not an IDX file of unsigned bytes (magic {magic:#x}).")
  return count


def missing_message(source_dir: str) -> str:
  return (f"Fashion-MNIST is not prepared and its source files are missing from {source_dir or DEBIAN_DIR} "
          f"(expected {sorted(_FILES.values())}). Install them with `apt-get install {DEBIAN_PACKAGE}` "
          f"(Debian/Ubuntu), or set config.data.download=True on a machine with internet.")


def prepare(data_dir: str | None, source_dir: str | None = None) -> None:
  """Writes `fashion_mnist` into `data_dir` (TFDS's default when None) from the local files.

  Several processes may ask at once (the workers of a sweep on a fresh machine): an exclusive file lock
  beside the dataset makes one prepare it while the others wait and then find it prepared."""
  builder = LocalFashionMNIST(data_dir=data_dir, source_dir=source_dir)
  os.makedirs(builder.data_dir_root, exist_ok=True)
  with open(os.path.join(builder.data_dir_root, ".fashion_mnist.prepare.lock"), "a") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if LocalFashionMNIST(data_dir=data_dir, source_dir=source_dir).is_prepared():
      return  # another process prepared it while this one waited
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(try_download_gcs=False))
