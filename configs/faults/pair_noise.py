"""Fault: pairwise label noise. 30% of the training labels of every class c are swapped to class c + 1 (mod 10),
the "pair flipping" of the noisy-label literature (Han et al., 2018): unlike uniform noise, each class's wrong
labels all point at one other class, so the confusion concentrates on those pairs. Validation labels are
clean. The doctor's `label_noise` finding lists the likely-wrong training labels per class pair (cleanlab).

    python -m cnn_val.main --config=configs/faults/pair_noise.py --workdir=runs/faults/pair_noise
"""

from cnn_val.configs.faults import healthy


def get_config():
  config = healthy.get_config()
  config.data.scenario.label_noise = 0.3
  config.data.scenario.label_noise_kind = "pair"
  return config
