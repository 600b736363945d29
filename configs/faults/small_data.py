"""Fault: too little data, 1,000 training examples (the first 1,000 of the training part), same model.

Trained for 100 epochs (1,562 steps, a tenth of the healthy run's steps) so that it converges on what it has.
"""

from cnn_val.configs.faults import healthy


def get_config():
  config = healthy.get_config()
  config.data.max_train_examples = 1_000
  config.num_epochs = 100
  config.log_every_steps = 100
  config.optim.decay_steps = 500
  return config
