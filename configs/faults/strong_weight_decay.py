"""Fault: regularisation too strong: the faults' healthy recipe with decoupled (AdamW) weight decay 1.0, a hundred
times PyTorch's AdamW default, every other field the same. Each step shrinks the weights by up to lr * 1.0 = 1e-3 of
themselves, about a quarter of the step's size: the model cannot fit its training data, and loses accuracy with no
other symptom. The doctor reads `underfitting` and tries weakening the regularisation (weight decay 0.1) before a
wider model (README, "Regularisation too strong").
"""

from cnn_val.configs.faults import healthy


def get_config():
  config = healthy.get_config()
  config.optim.weight_decay = 1.0
  return config
