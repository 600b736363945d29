"""Fault: long-tailed training set; the four upper-body garment classes (T-shirt, pullover, coat, shirt),
which the model confuses with each other, keep 1/50 of their examples. Validation stays balanced.

The levers: `config.imbalance.class_weighting` (inverse, effective_number) or `config.imbalance.resampling`.
"""

from cnn_val.configs.faults import healthy


def get_config():
  config = healthy.get_config()
  config.data.scenario.imbalance_ratio = 50.0
  config.data.scenario.minority_classes = (0, 2, 4, 6)
  return config
