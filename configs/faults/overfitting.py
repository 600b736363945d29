"""Fault: overfitting. The seed's example-1 model (SeedCNN: no dropout, a 5408-wide dense layer) for 20
epochs on the healthy schedule: the training loss keeps falling while the validation loss climbs from its
minimum and the accuracy gap opens."""

from configs.faults import healthy


def get_config():
  config = healthy.get_config()
  config.model.name = "SeedCNN"
  config.num_epochs = 20
  return config
