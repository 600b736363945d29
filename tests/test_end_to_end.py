"""The real offline default: Fashion-MNIST from Debian's package, prepared fresh and trained briefly."""

import os

import pytest

from cnn_val import train
from cnn_val.data import fashion_mnist_offline
from cnn_val.configs import default


@pytest.mark.slow
def test_default_config_trains_on_real_fashion_mnist(tmp_path):
  assert fashion_mnist_offline.local_files() is not None, fashion_mnist_offline.missing_message(None)
  config = default.get_config()
  config.data.data_dir = str(tmp_path / "tfds")  # a fresh preparation from the Debian files
  config.data.download = False
  config.data.max_train_examples = 6_000
  config.num_epochs = 2
  config.num_devices = 2
  row = train.train_and_evaluate(config, str(tmp_path / "run"))
  assert os.path.isdir(tmp_path / "tfds" / "fashion_mnist" / "3.0.1")
  assert sum(row["val_pred_histogram"]) == 6_000  # the full held-out 10% of the 60k training images
  assert row["val_accuracy"] > 0.8 and row["test_accuracy"] > 0.8
