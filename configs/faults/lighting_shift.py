"""Fault: the training set was shot under one, darker and flatter, lighting condition; validation was not.

Training images only are scaled to 45% brightness and 60% contrast (`config.data.scenario.train_*`).
The lever: lighting augmentation (`config.augment.brightness`/`contrast`) or per-image standardization.
"""

from cnn_val.configs.faults import healthy


def get_config():
  config = healthy.get_config()
  config.data.scenario.train_brightness = 0.45
  config.data.scenario.train_contrast = 0.6
  return config
