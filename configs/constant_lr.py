"""The faults' 10-epoch recipe without learning-rate decay: Adam at a constant 1e-3 for 15 epochs.

    python -m cnn_val.main --config=configs/constant_lr.py --workdir=runs/constant_lr

Kept as an experiment, not a fault: measured over 3 seeds it reached 91.97 ± 0.26% validation accuracy,
above the decayed 10-epoch configs/faults/healthy.py (91.66 ± 0.16%), and the doctor called it healthy
(a medium `lr_plateau` on the two seeds whose last third gained < 0.3 points).
"""

from cnn_val.configs.faults import healthy


def get_config():
  config = healthy.get_config()
  config.num_epochs = 15
  config.optim.schedule = "constant"
  return config
