"""Fault: underfitting, a model far too small for the task: a ConvNet with 1 and 2 channels and no hidden
layer (~1,000 parameters); training and validation accuracy stay low together. (With 2 and 4 channels,
2,066 parameters, it reached 87% and a training loss of 0.16 ln K, below the doctor's 0.2 ln K: measured,
so this fault uses the smaller model.)"""

from cnn_val.configs.faults import healthy


def get_config():
  config = healthy.get_config()
  config.model.name = "ConvNet"
  config.model.widths = (1, 2)
  config.model.hidden_units = 0
  config.model.dropout_rate = 0.0
  return config
