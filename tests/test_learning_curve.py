"""The doctor's learning curve: the subset arms, the power-law fit, the finding it makes when twice the data
is predicted to help, the nested training subsets it trains on, and a flat curve that must not fire."""

import json
import math
import os

import numpy as np
import pytest

from cnn_val import config_check, rundir
from cnn_val.doctor import experiments, learning_curve, report
from tests.test_experiments import _config, _fake_sweep, _fake_sweeps_train_nothing, _options_finding, _write_run

assert _fake_sweeps_train_nothing  # autouse here too: a fake sweep that lacks an arm fails instead of training it


def _with_audit(workdir, train_count, num_classes=10):
  with open(os.path.join(workdir, rundir.AUDIT_FILE), "w") as f:
    json.dump({"num_classes": num_classes, "splits": {"train": {"count": train_count}}}, f)


def test_the_fit_is_the_saturating_power_law_through_the_three_points():
  # err(n) = c + a n^b at n = 250, 500, 1000: each doubling gains 2^b of the one before.
  c, a, b = 0.05, 2.0, -0.5
  err = [c + a * n ** b for n in (250, 500, 1000)]
  r, gain = learning_curve.fit([1 - e for e in err])
  assert r == pytest.approx(2 ** b) and gain == pytest.approx(err[2] - (c + a * 2000 ** b))
  assert learning_curve.fit([0.80, 0.85, 0.88]) == pytest.approx((0.6, 0.018))
  assert learning_curve.fit([0.80, 0.82, 0.85]) == pytest.approx((1.0, 0.03))  # no diminishing: at most the last
  assert learning_curve.fit([0.80, 0.84, 0.83]) == (0.0, 0.0)  # worse with all the data: nothing predicted
  assert learning_curve.fit([0.85, 0.84, 0.86]) == (0.0, 0.0)  # the first doubling lost: no curve to continue


def test_the_subset_arms_keep_the_number_of_steps_and_evaluations(tmp_path):
  workdir = str(tmp_path)
  _write_run(workdir, _config(), 0.85)
  _with_audit(workdir, 4000)
  arms = {a.name: dict(a.overrides) for a in learning_curve.arms(experiments.Run(workdir))}
  assert arms == {"data_1_4": {"data.train_fraction": 0.25, "num_epochs": 12, "eval_every_epochs": 4},
                  "data_1_2": {"data.train_fraction": 0.5, "num_epochs": 6, "eval_every_epochs": 2}}
  _with_audit(workdir, 399)  # a quarter would hold < 10 examples per class: no curve
  assert learning_curve.arms(experiments.Run(workdir)) == []


def _curve_sweep(workdir, config, base, quarter, half):
  arms = {a.name: dict(a.overrides) for a in learning_curve.arms(experiments.Run(workdir))}
  _fake_sweep(workdir, config, {"baseline": ({}, base), "data_1_4": (arms["data_1_4"], quarter),
                                "data_1_2": (arms["data_1_2"], half)})


def test_a_data_bound_run_gets_a_more_data_finding_ranked_after_the_measured_fixes(tmp_path):
  workdir = str(tmp_path)
  config = _config()
  _write_run(workdir, config, 0.80)
  _with_audit(workdir, 4000)
  options = [("dropout", {"config.model.dropout_rate": 0.7}), ("augment", {"config.augment.preset": "characters"})]
  diagnosis = {"verdict": "problems_found", "findings": [_options_finding("overfitting", options)]}
  base = [0.80, 0.81, 0.79]
  _curve_sweep(workdir, config, base, quarter=[0.70, 0.715, 0.69], half=[0.755, 0.765, 0.745])
  _fake_sweep(workdir, config, {"overfitting_dropout": ({"model.dropout_rate": 0.7}, [0.805, 0.816, 0.797]),
                                "overfitting_augment": ({"augment.preset": "characters"}, [0.78, 0.79, 0.77])})
  lines = []  # (the confirmed dropout's follow-up, regularised_deeper(_bn), is test_experiments')
  result = experiments.verify(workdir, diagnosis, seeds=3, explore="never", follow_up=False, log=lines.append)
  assert any("with a learning curve (1/4 and 1/2 of the training data)" in line for line in lines)
  causes = [(f["cause"], f["evidence"].get("lever")) for f in result["findings"]]
  assert causes == [("overfitting", None), ("overfitting", "more_data")]  # measured first, then predicted
  data = result["findings"][1]
  assert data["verified"]["confirmed"] and data["verified"]["predicted"] and data["fix"]["overrides"] == {}
  curve = result["verification"]["learning_curve"]
  expected = np.mean([learning_curve.fit([q, h, b])[1]
                      for q, h, b in zip([0.70, 0.715, 0.69], [0.755, 0.765, 0.745], base)])
  assert data["verified"]["delta"] == pytest.approx(expected) and expected > 0.02
  assert data["severity"] == "high" and result["verdict"] == "problems_found"
  assert curve["halving_cost"]["mean"] == pytest.approx(0.045)
  os.remove(os.path.join(workdir, rundir.AUDIT_FILE))  # a count alone: the report's audit section needs more
  with open(report.write_report(workdir, result)) as f:
    text = f.read()
  assert "| `overfitting`: twice the training data (predicted by the learning curve) |  | 3 |" in text
  assert "### Learning curve" in text and "| training examples | 1,000 | 2,000 | 4,000 | 2x (predicted) |" in text
  assert os.path.exists(os.path.join(workdir, "plots", "learning_curve.png"))
  # Nothing else confirmed: the data finding leads, and fix_first says it is a prediction.
  _with_audit(workdir, 4000)
  _fake_sweep(workdir, config, {"overfitting_dropout": ({"model.dropout_rate": 0.7}, [0.79, 0.80, 0.785])})
  result = experiments.verify(workdir, diagnosis, seeds=3, explore="never", log=lambda _: None)
  assert result["findings"][0]["evidence"]["lever"] == "more_data"
  assert result["fix_first"]["why"].startswith("the learning curve predicts")


def test_a_flat_learning_curve_makes_no_finding_and_never_runs_without_overfitting(tmp_path):
  workdir = str(tmp_path)
  config = _config()
  _write_run(workdir, config, 0.80)
  _with_audit(workdir, 4000)
  diagnosis = {"verdict": "problems_found",
               "findings": [_options_finding("overfitting", [("dropout", {"config.model.dropout_rate": 0.7}),
                                                             ("augment", {"config.augment.preset": "characters"})])]}
  base = [0.80, 0.81, 0.79]
  _curve_sweep(workdir, config, base, quarter=[0.801, 0.808, 0.792], half=[0.799, 0.811, 0.789])
  _fake_sweep(workdir, config, {"overfitting_dropout": ({"model.dropout_rate": 0.7}, base),
                                "overfitting_augment": ({"augment.preset": "characters"}, base)})
  result = experiments.verify(workdir, diagnosis, seeds=3, explore="never", log=lambda _: None)
  assert not any(f["evidence"].get("lever") == "more_data" for f in result["findings"])
  assert not result["verification"]["learning_curve"]["confirmed"]
  other = {"verdict": "problems_found", "findings": [_options_finding(
      "lr_plateau", [("cosine", {"config.optim.schedule": "cosine"}), ("step", {"config.optim.schedule": "constant"})])]}
  _fake_sweep(workdir, config, {"lr_plateau_cosine": ({"optim.schedule": "cosine"}, base),
                                "lr_plateau_step": ({"optim.schedule": "constant"}, base)})
  result = experiments.verify(workdir, other, seeds=3, explore="never", log=lambda _: None)
  assert "learning_curve" not in result["verification"]
  with open(os.path.join(workdir, "verify", "sweep.json")) as f:
    assert [arm["name"] for arm in json.load(f)["arms"]] == ["baseline", "lr_plateau_cosine", "lr_plateau_step"]
  with pytest.raises(ValueError, match="learning_curve='sometimes': expected auto, always or never"):
    experiments.verify(workdir, other, seeds=3, learning_curve="sometimes", log=lambda _: None)


def test_train_fraction_keeps_the_first_share_of_the_training_split(tiny_config):
  from cnn_val.data import loading  # pylint: disable=import-outside-toplevel
  full = loading.load_data(tiny_config)[1]["train"]
  tiny_config.data.train_fraction = 0.25
  splits, arrays = loading.load_data(tiny_config)
  keep = int(round(0.25 * len(full["label"])))
  assert splits.num_train == keep and np.array_equal(arrays["train"]["image"], full["image"][:keep])
  tiny_config.data.train_fraction = 1e-9
  with pytest.raises(ValueError, match=r"config.data.train_fraction=1e-09 keeps no example"):
    loading.load_data(tiny_config)
  for bad in (0.0, 1.5, math.nan):
    tiny_config.data.train_fraction = bad
    with pytest.raises(ValueError, match="data.train_fraction"):
      config_check.validate(tiny_config)
