"""The seed's example 2 as the article wrote it: `SeedCNN` trained on `ImageDataGenerator` batches
(rotation 20°, shifts 0.2, shear 0.2° — Keras' unit is degrees —, zoom 0.2, horizontal flips, nearest fill:
the `seed_ex2` augmentation preset), Adam at Keras' constant 1e-3, batch 32, 10 epochs.

    python -m cnn_val.main --config=configs/seed_ex2.py --workdir=runs/seed_ex2

Keras' Glorot-uniform kernels and zero biases; tests/test_seed_configs.py checks each field against the article.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.model.name = "SeedCNN"
  config.model.kernel_init = "glorot_uniform"
  config.num_epochs = 10
  config.batch_size = 32
  config.optim.optimizer = "adam"
  config.optim.learning_rate = 1e-3
  config.optim.schedule = "constant"
  config.augment.preset = "seed_ex2"
  return config
