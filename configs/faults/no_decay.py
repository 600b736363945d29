"""Fault: no learning-rate decay. Adam at the healthy 1e-3 but constant (no schedule) for 15 epochs:
validation accuracy plateaus at the noise level that a constant step size allows."""

from configs.faults import healthy


def get_config():
  config = healthy.get_config()
  config.num_epochs = 15
  config.optim.schedule = "constant"
  return config
