"""The reference for `faults/colour_shortcut.py`: the same coloured variant of Fashion-MNIST (every image in
every split tinted with a hue drawn uniformly for it, saturation 0.6) without the shortcut. Not a fault: the
doctor should call it healthy, and the colour shortcut's loss is measured against it.

    python -m cnn_val.main --config=configs/faults/colour_healthy.py --workdir=runs/faults/colour_healthy
"""

from cnn_val.configs.faults import healthy


def get_config():
  config = healthy.get_config()
  config.data.scenario.colorize = 0.6
  return config
