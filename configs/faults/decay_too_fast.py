"""Fault: a learning-rate schedule that decays too fast: the faults' healthy recipe with the exponential decay's
`decay_steps` at 500 instead of 5,000 (Keras' ExponentialDecay(1e-3, 500, 0.7): a zero dropped), every other field the
same. The rate falls under 1% of its peak during epoch 4 of 10 and the rest of the run barely moves the weights:
validation accuracy stops where the rate did, with no other symptom (before the schedule rule, `healthy`). The doctor
reads `lr_too_low` from the logged rate and tries a slower decay and a cosine schedule (README, "A schedule that
decays too fast").
"""

from cnn_val.configs.faults import healthy


def get_config():
  config = healthy.get_config()
  config.optim.decay_steps = 500
  return config
