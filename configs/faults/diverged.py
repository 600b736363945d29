"""Fault: divergence, plain SGD at a learning rate of 50: the loss becomes NaN/Inf within the first epoch
and the run stops, keeping its last good checkpoint."""

from configs.faults import healthy


def get_config():
  config = healthy.get_config()
  config.optim.optimizer = "sgd"
  config.optim.momentum = 0.0
  config.optim.learning_rate = 50.0
  config.optim.schedule = "constant"
  return config
