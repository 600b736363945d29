"""MNIST from TFDS (downloaded on first use; needs internet or a prepared config.data.data_dir).

    python -m cnn_val.main --config=configs/mnist.py --workdir=runs/mnist

The seed's example 3 model. Not measured here (no internet on the development machine); Keras' MNIST
convnet example, the same model, reports about 99% test accuracy.
"""

from cnn_val.configs import default


def get_config():
  config = default.get_config()
  config.data.name = "mnist"
  config.num_epochs = 10
  config.batch_size = 128
  config.optim.decay_steps = 2_000
  return config
