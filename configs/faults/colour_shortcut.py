"""Fault: a colour shortcut on a coloured variant of Fashion-MNIST. Every image, in every split, is tinted
with a hue drawn uniformly for it (`config.data.scenario.colorize`, saturation 0.6), so colour says nothing
about the class, except in training, where every image of class 7 (sneaker) is red
(`colour_shortcut_classes`, `colour_shortcut_hue`). A model can learn "red means sneaker"; validation's
sneakers come in every colour. The split-level colour statistics barely move; class 7's red channel does.

    python -m cnn_val.main --config=configs/faults/colour_shortcut.py --workdir=runs/faults/colour_shortcut
"""

from cnn_val.configs.faults import healthy


def get_config():
  config = healthy.get_config()
  config.data.scenario.colorize = 0.6
  config.data.scenario.colour_shortcut_classes = (7,)
  config.data.scenario.colour_shortcut_hue = 0.0
  return config
