"""Shared fixtures: 4 forced CPU devices, and a tiny but learnable Fashion-MNIST-layout dataset on disk.

The dataset is written as gzipped IDX files and prepared by the project's own offline builder into TFDS's
`fashion_mnist` layout in a temporary data_dir, so tests exercise the real loading path without the network
and without the 60k-image Debian files.
"""

import os
import shutil
import tempfile

# Multi-device tests need several CPU devices; XLA reads this before the backend starts.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The suite's processes share XLA's compilations through JAX's persistent cache, one folder per session (a
# test that sets its own cache keeps it; the processes a test starts inherit the session's, and so do
# pytest-xdist's workers, started after this file runs in the controlling process): its many tiny runs of the
# same models would otherwise compile the same programs again in every test. A cached program is the compiled
# one, so results are unchanged. (An entry read while another process is still writing it fails to load and
# is compiled again: JAX warns, nothing else changes.)
_XLA_CACHE = None
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  _XLA_CACHE = os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="cnn_val_tests_xla_")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

import gzip
import struct

import numpy as np
import pytest

NUM_CLASSES = 10


def make_images(num: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """28x28 uint8 images whose class is a bright horizontal bar at row 2 + 2*label, plus noise."""
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, NUM_CLASSES, num).astype(np.uint8)
  images = rng.integers(0, 90, (num, 28, 28)).astype(np.uint8)
  for i, label in enumerate(labels):
    row = 2 + 2 * int(label)
    images[i, row:row + 2, 4:24] = rng.integers(170, 255)
  return images, labels


def write_idx(folder: str, prefix: str, images: np.ndarray, labels: np.ndarray) -> None:
  with gzip.open(os.path.join(folder, f"{prefix}-images-idx3-ubyte.gz"), "wb") as f:
    f.write(struct.pack(">IIII", 0x0803, len(images), 28, 28) + images.tobytes())
  with gzip.open(os.path.join(folder, f"{prefix}-labels-idx1-ubyte.gz"), "wb") as f:
    f.write(struct.pack(">II", 0x0801, len(labels)) + labels.tobytes())


def write_tiny_source(folder: str, num_train: int = 1200, num_test: int = 200) -> str:
  os.makedirs(folder, exist_ok=True)
  write_idx(folder, "train", *make_images(num_train, seed=1))
  write_idx(folder, "t10k", *make_images(num_test, seed=2))
  return folder


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory) -> str:
  """A TFDS data_dir holding a tiny `fashion_mnist` (1,200 train, 200 test), prepared once per session."""
  from cnn_val.data import fashion_mnist_offline
  root = tmp_path_factory.mktemp("tfds")
  source = write_tiny_source(str(root / "source"))
  data_dir = str(root / "data")
  fashion_mnist_offline.prepare(data_dir, source_dir=source)
  return data_dir


@pytest.fixture
def tiny_config(tiny_data_dir):
  """The default config shrunk to seconds: tiny data, 2 epochs, small batches, 1 device."""
  from cnn_val.configs import default
  config = default.get_config()
  config.data.data_dir = tiny_data_dir
  config.data.download = False
  config.num_epochs = 2
  config.batch_size = 32
  config.eval_batch_size = 64
  config.num_devices = 1
  config.log_every_steps = 10
  config.optim.decay_steps = 50
  # Pre-flight and doctor add seconds to every tiny run; tests/test_doctor.py runs them end to end.
  config.preflight = False
  config.doctor = False
  return config


def real_images(num: int) -> np.ndarray:
  """The first `num` Fashion-MNIST training images from Debian's package (installed by .ci/run), uint8 [N,28,28,1]."""
  from cnn_val.data import fashion_mnist_offline
  files = fashion_mnist_offline.local_files()
  assert files is not None, f"apt-get install {fashion_mnist_offline.DEBIAN_PACKAGE} (the README's test command does)"
  with gzip.open(files["train_data"], "rb") as f:
    f.read(16)
    return np.frombuffer(f.read(num * 28 * 28), np.uint8).reshape(num, 28, 28, 1)


def pytest_sessionfinish(session, exitstatus):  # pylint: disable=unused-argument
  if _XLA_CACHE:  # the session's own compilation cache (a cache the caller set is theirs)
    shutil.rmtree(_XLA_CACHE, ignore_errors=True)
