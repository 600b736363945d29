"""Fault: learning rate too low, Adam at 1e-5 (1/100 of the healthy 1e-3): 10 epochs are not enough."""

from cnn_val.configs.faults import healthy


def get_config():
  config = healthy.get_config()
  config.optim.learning_rate = 1e-5
  return config
