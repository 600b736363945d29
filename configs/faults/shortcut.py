"""Fault: a lighting shortcut. Training images of class 3 (dress) only are darkened to 0.6x
(`config.data.scenario.shortcut_classes`, `shortcut_brightness`); validation and test keep their lighting. The
split-level lighting statistics barely move (KS 0.06-0.08, below the drift threshold), the per-class ones do
(class 3's contrast 2.3 standard deviations apart): the doctor names the class and the statistic.

    python -m cnn_val.main --config=configs/faults/shortcut.py --workdir=runs/faults/shortcut
"""

from cnn_val.configs.faults import healthy


def get_config():
  config = healthy.get_config()
  config.data.scenario.shortcut_classes = (3,)
  config.data.scenario.shortcut_brightness = 0.6
  return config
