"""Fault: overfitting. The seed's example-1 model (SeedCNN, no dropout) at a constant learning rate for 20
epochs: the training loss keeps falling while the validation loss climbs from its minimum."""

from configs.faults import healthy


def get_config():
  config = healthy.get_config()
  config.model.name = "SeedCNN"
  config.num_epochs = 20
  config.optim.schedule = "constant"
  return config
