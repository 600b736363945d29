"""The seed's example 1: SeedCNN (Conv32 - pool - dense), Adam at a constant 1e-3, on Fashion-MNIST.

    python -m cnn_val.main --config=configs/seed_ex1.py --workdir=runs/seed_ex1

No dropout and no decay: the training loss keeps falling while validation accuracy stalls and then slips,
the overfitting the doctor is built to name. Expected: about 91% test accuracy (README has the figure).
"""

from configs import default


def get_config():
  config = default.get_config()
  config.model.name = "SeedCNN"
  config.num_epochs = 10
  config.optim.schedule = "constant"
  return config
