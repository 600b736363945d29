"""The fault scenarios' common budget with no fault: the seed's example-3 CNN on Fashion-MNIST, 10 epochs.

    python -m cnn_val.main --config=configs/faults/healthy.py --workdir=runs/faults/healthy

Every configs/faults/*.py is this config plus one fault (cnn_val/data/scenarios.py), so their validation
accuracies compare directly (README, "Fault scenarios"). The exponential decay is scaled to the shorter run
(the learning rate falls to ~0.3x by the end, as the default's does over 25 epochs).
"""

from cnn_val.configs import default


def get_config():
  config = default.get_config()
  config.num_epochs = 10
  config.optim.decay_steps = 5_000
  return config
