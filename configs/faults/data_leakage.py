"""Fault: 3,000 of the 6,000 validation examples are also in the training set (exact copies, cross-split
duplicates): validation accuracy overstates what the test set shows."""

from cnn_val.configs.faults import healthy


def get_config():
  config = healthy.get_config()
  config.data.scenario.duplicates = 3_000
  return config
