"""The seed's example 3 as the article wrote it: Conv32 - pool - Conv64 - pool - flatten - dropout 0.5 - dense
(`SeedCNNDropout`), Adam at Keras' constant 1e-3, batch 32, 10 epochs.

    python -m cnn_val.main --config=configs/seed_ex3.py --workdir=runs/seed_ex3

Example 1's recipe (Keras' Glorot-uniform kernels and zero biases, Adam's defaults, batch 32, 10 epochs) with
the article's changes; tests/test_seed_configs.py checks each field against the article. `configs/default.py`
is our recipe built on this model: 25 epochs, an exponential decay to ~0.3x, Flax's LeCun-normal
initialisation.
"""

from cnn_val.configs import seed_ex1


def get_config():
  config = seed_ex1.get_config()
  config.model.name = "SeedCNNDropout"
  config.model.dropout_rate = 0.5
  config.optim.schedule = "constant"  # compile(optimizer='adam'): Keras' constant 1e-3
  return config
