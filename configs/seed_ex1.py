"""The seed's example 1 as the article wrote it: Conv32 - pool - dense (`SeedCNN`), Adam with Keras'
`ExponentialDecay(1e-3, decay_steps=10000, decay_rate=0.96, staircase=True)`, batch 32, 10 epochs.

    python -m cnn_val.main --config=configs/seed_ex1.py --workdir=runs/seed_ex1

Field by field (tests/test_seed_configs.py checks each against the article): Keras' Glorot-uniform kernels
and zero biases, Adam's Keras defaults (epsilon 1e-7), categorical cross-entropy, validation after each
epoch. At 1,687 steps an epoch the staircase decays the rate once (to 0.96e-3, from step 10,000).
"""

from cnn_val.configs import default


def get_config():
  config = default.get_config()
  config.model.name = "SeedCNN"
  config.model.kernel_init = "glorot_uniform"
  config.num_epochs = 10
  config.batch_size = 32
  config.optim.optimizer = "adam"
  config.optim.learning_rate = 1e-3
  config.optim.schedule = "exponential"
  config.optim.decay_steps = 10_000
  config.optim.decay_rate = 0.96
  config.optim.staircase = True
  return config
