"""Fault: overfitting. The seed's example-1 model (SeedCNN: no dropout, a 5,408-wide dense layer) on 10,000
training examples for 30 epochs: the training loss keeps falling while the validation loss climbs from its
minimum and the accuracy gap opens. (On all 54,000 examples for 20 epochs with the healthy decay it did
not: a 3.6-point gap and a flat validation loss, measured over 3 seeds.)"""

from cnn_val.configs.faults import healthy


def get_config():
  config = healthy.get_config()
  config.model.name = "SeedCNN"
  config.data.max_train_examples = 10_000
  config.num_epochs = 30
  return config
