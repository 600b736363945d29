"""Fault: label-destroying augmentation on an orientation-sensitive task.

The task: sandals (5) are replaced by upside-down sneakers (7), bags (8) by upside-down ankle boots (9)
(`config.data.scenario.orientation_pairs`, every split), so orientation is what tells those classes apart.
The augmentation: random vertical flips and rotations up to 180 degrees, which map each pair into the
other. The lever: narrower augmentation (`config.augment.preset='characters'`: no flips, 10 degrees).
"""

from cnn_val.configs.faults import healthy


def get_config():
  config = healthy.get_config()
  config.data.scenario.orientation_pairs = ((7, 5), (9, 8))
  config.augment.vertical_flip = True
  config.augment.rotation_range = 180.0
  return config
