"""Fault: no learning-rate decay. Adam at a constant 3e-3 (no schedule) for 15 epochs: validation accuracy
plateaus at the noise level the constant step size allows."""

from configs.faults import healthy


def get_config():
  config = healthy.get_config()
  config.num_epochs = 15
  config.optim.learning_rate = 3e-3
  config.optim.schedule = "constant"
  return config
