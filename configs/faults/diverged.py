"""Fault: divergence. Plain SGD at an absurd learning rate (1e8): the weights overflow and the loss turns
Inf/NaN within the first few steps; the run stops, keeping its last good checkpoint, and writes
diverged.json. (At rates of 50 to 1e4 this model does not produce a NaN: its ReLUs die and the loss stays
large but finite, which the doctor calls lr_too_high.)"""

from cnn_val.configs.faults import healthy


def get_config():
  config = healthy.get_config()
  config.optim.optimizer = "sgd"
  config.optim.momentum = 0.0
  config.optim.learning_rate = 1e8
  config.optim.schedule = "constant"
  return config
