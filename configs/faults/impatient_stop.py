"""Fault: early stopping with too little patience: the faults' healthy recipe with a budget of 20 epochs and
`early_stopping_patience=1`, every other field the same. Validation accuracy fails to improve for one evaluation
while the validation loss is still at or near its lowest, a dip within the noise of one evaluation, and the run stops
with much of its budget untrained (Fashion-MNIST, seeds 0-4: at epochs 5, 8, 3, 11 and 5 of 20). Before the
early-stopping rule the doctor assumed a run that stopped early had stopped gaining and read it as `healthy`; it now reads
`underfitting` from the stop and tries more patience and none (README, "A patience too short").
"""

from cnn_val.configs.faults import healthy


def get_config():
  config = healthy.get_config()
  config.num_epochs = 20
  config.early_stopping_patience = 1
  return config
