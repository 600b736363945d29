"""Fault: underfitting, a model too small for the task: a ConvNet with 2 and 4 channels and no hidden layer
(~600 parameters); training and validation accuracy stay low together."""

from configs.faults import healthy


def get_config():
  config = healthy.get_config()
  config.model.name = "ConvNet"
  config.model.widths = (2, 4)
  config.model.hidden_units = 0
  config.model.dropout_rate = 0.0
  return config
