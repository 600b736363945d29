"""The seed's example 2 as the article wrote it: `SeedCNN` trained on `ImageDataGenerator` batches
(rotation 20°, shifts 0.2, shear 0.2° — Keras' unit is degrees —, zoom 0.2, horizontal flips, nearest fill:
the `seed_ex2` augmentation preset), Adam at Keras' constant 1e-3, batch 32, 10 epochs.

    python -m cnn_val.main --config=configs/seed_ex2.py --workdir=runs/seed_ex2

Example 1's recipe (Keras' Glorot-uniform kernels and zero biases, Adam's defaults, batch 32, 10 epochs) with
the article's two changes; tests/test_seed_configs.py checks each field against the article.
"""

from cnn_val.configs import seed_ex1


def get_config():
  config = seed_ex1.get_config()
  config.optim.schedule = "constant"  # compile(optimizer='adam'): Keras' constant 1e-3
  config.augment.preset = "seed_ex2"
  return config
