"""The orientation-sensitive task of configs/faults/orientation.py without the harmful augmentation (no
flips, no large rotations): its baseline."""

from cnn_val.configs.faults import healthy


def get_config():
  config = healthy.get_config()
  config.data.scenario.orientation_pairs = ((7, 5), (9, 8))
  return config
