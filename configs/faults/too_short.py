"""Fault: training stopped too soon: the faults' healthy recipe for 2 epochs instead of 10, every other field the
same (the exponential decay as configured, so the rate has barely begun to fall). Its symptoms are lost accuracy
and a validation accuracy still climbing at the end, which the doctor reads as `underfitting` (training too short;
README, "Still learning when it stopped"), and its fix, twice the epochs, `--verify` trains.
"""

from cnn_val.configs.faults import healthy


def get_config():
  config = healthy.get_config()
  config.num_epochs = 2
  return config
