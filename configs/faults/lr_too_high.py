"""Fault: learning rate too high, Adam at 2e-2 (20x the healthy 1e-3): steps too large for the weights."""

from cnn_val.configs.faults import healthy


def get_config():
  config = healthy.get_config()
  config.optim.learning_rate = 2e-2
  return config
