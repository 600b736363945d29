"""Fault: 40% of the training labels replaced by a uniformly drawn other class; validation labels are clean."""

from cnn_val.configs.faults import healthy


def get_config():
  config = healthy.get_config()
  config.data.scenario.label_noise = 0.4
  config.data.scenario.label_noise_kind = "symmetric"
  return config
