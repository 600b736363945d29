"""Fault: two causes at once, a long tail and a lighting change: the `class_imbalance` config's four classes at
1/50 and the `lighting_shift` config's darker, flatter training images. The doctor names both and says which to
fix first (`fix_first` in diagnosis.json, the report's first line under Findings).

    python -m cnn_val.main --config=configs/faults/compound.py --workdir=runs/faults/compound
"""

from cnn_val.configs.faults import class_imbalance, lighting_shift


def get_config():
  config = class_imbalance.get_config()
  lighting = lighting_shift.get_config().data.scenario
  config.data.scenario.train_brightness = lighting.train_brightness
  config.data.scenario.train_contrast = lighting.train_contrast
  return config
