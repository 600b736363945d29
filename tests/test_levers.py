"""The data levers inside real (tiny) training runs: augmentation, class weights, resampling, scenarios."""

import numpy as np
import pytest

from cnn_val import rundir, train
from cnn_val.data import loading


def _levers(config):
  config.augment.preset = "characters"
  config.augment.brightness = 0.1
  config.data.scenario.imbalance_ratio = 4.0
  config.data.scenario.label_noise = 0.1
  config.imbalance.class_weighting = "effective_number"
  config.imbalance.resampling = "oversample"
  config.batch_size = 40
  config.eval_batch_size = 40
  return config


def test_levers_give_the_same_run_on_four_devices_as_on_one(tiny_config, tmp_path):
  config = _levers(tiny_config)
  config.num_epochs = 1
  rows = {}
  for n in (1, 4):
    config.num_devices = n
    train.train_and_evaluate(config, str(tmp_path / f"dev{n}"))
    rows[n] = rundir.read_metrics(str(tmp_path / f"dev{n}"))
  for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_balanced_accuracy",
              "val_macro_f1", "grad_norm"):
    np.testing.assert_allclose(rows[4][-1][key], rows[1][-1][key], rtol=2e-4, atol=1e-5, err_msg=key)
  assert rows[4][-1]["val_confusion"] == rows[1][-1]["val_confusion"]


def test_run_with_levers_writes_class_metrics_and_resampled_epochs(tiny_config, tmp_path):
  config = _levers(tiny_config)
  config.num_epochs = 3
  config.num_devices = 1
  train.train_and_evaluate(config, str(tmp_path))
  rows = rundir.read_metrics(str(tmp_path))
  # The long tail (rho 4 over the 1,080 training examples' ~108 per class) oversampled back to balance:
  # 10 classes x the largest class per epoch, in full batches of 40.
  largest = rows[0]["step"] * 40 // 10
  assert 100 <= largest <= 140
  last = rows[-1]
  assert sum(last["val_pred_histogram"]) == 120
  assert np.sum(last["val_confusion"]) == 120 and np.trace(last["val_confusion"]) / 120 == pytest.approx(last["val_accuracy"])
  recall = np.array(last["val_per_class_recall"], float)
  np.testing.assert_allclose(last["val_balanced_accuracy"], np.nanmean(recall))
  assert len(last["val_per_class_precision"]) == 10 and 0 <= last["val_macro_f1"] <= 1
  best = max(range(len(rows)), key=lambda i: rows[i]["val_accuracy"])
  first_best = min(i for i in range(len(rows)) if rows[i]["val_accuracy"] == rows[best]["val_accuracy"])
  assert "val_confusion" in rows[first_best]  # the best evaluation keeps its confusion matrix
  assert last["val_accuracy"] > 0.5  # augmented, noisy, imbalanced: still learns the bars


def test_cross_split_duplicates_are_removed_when_asked(tiny_config, tmp_path):
  from cnn_val import audit as audit_lib
  tiny_config.num_epochs = 1
  tiny_config.data.scenario.duplicates = 50
  _, leaky = loading.load_data(tiny_config)
  tiny_config.data.remove_cross_split_duplicates = True
  _, clean = loading.load_data(tiny_config)
  assert len(leaky["train"]["label"]) - len(clean["train"]["label"]) >= 50
  report = audit_lib.audit(clean, 10)
  assert report["duplicates"]["validation"]["exact"] == 0 and report["duplicates"]["test"]["exact"] == 0
  assert audit_lib.audit(leaky, 10)["duplicates"]["validation"]["exact"] >= 50


def test_a_bad_scenario_field_fails_before_anything_is_written(tiny_config, tmp_path):
  import os
  tiny_config.data.scenario.label_noise = 1.5
  with pytest.raises(ValueError, match=r"config.data.scenario.label_noise=1.5: expected a rate in \[0, 1\)"):
    train.train_and_evaluate(tiny_config, str(tmp_path))
  assert not os.path.exists(tmp_path / "config.json")
