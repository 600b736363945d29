"""Fault: near-duplicate leakage. 300 validation images (5% of validation) are copied into training, each moved
by one pixel and given light noise (`config.data.scenario.near_duplicates`): no byte comparison finds them; the
audit's shift-tolerant near-duplicate search does (clean Fashion-MNIST has 0.07% natural near duplicates).

    python -m cnn_val.main --config=configs/faults/near_leakage.py --workdir=runs/faults/near_leakage
"""

from cnn_val.configs.faults import healthy


def get_config():
  config = healthy.get_config()
  config.data.scenario.near_duplicates = 300
  return config
