"""Fault: a class missing from training. Every training image of class 8 (bag) is removed; validation and test
keep theirs, so 10% of validation can never be right, whatever the training does (the run trains anyway, with
a warning naming the class; the doctor's `missing_class` finding says what to do).

    python -m cnn_val.main --config=configs/faults/missing_class.py --workdir=runs/faults/missing_class
"""

from cnn_val.configs.faults import healthy


def get_config():
  config = healthy.get_config()
  config.data.scenario.missing_classes = (8,)
  return config
