"""Fault: a model too small for the task, whose only symptom is lost accuracy: the seed's example-3 CNN at
1/8 of its width (4 and 8 channels, 2,346 parameters against 34,826), same layers, same recipe. The doctor's
lever menu (`--verify`: a wider model on the user's own architecture) is the evidence meant to find it.
"""

from cnn_val.configs.faults import healthy


def get_config():
  config = healthy.get_config()
  config.model.width_multiplier = 0.125
  return config
