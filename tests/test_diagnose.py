"""The doctor's rules on synthetic run directories: each cause fires on its evidence, and borderline cases
just inside a threshold do not."""

import json
import math
import os

import numpy as np
import pytest

from cnn_val import audit, rundir
from cnn_val.doctor import augmentation_rules, report, rules, signal_rules
from cnn_val.configs import default

K = 10


def _rows(epochs=10, *, train_acc=(0.81, 0.905), val_acc=(0.877, 0.918), train_loss=(0.52, 0.26),
          val_loss=(0.35, 0.24), update_ratio=3e-3, recall=None, confusion=None, val_acc_curve=None,
          val_loss_curve=None):
  """A healthy-looking history by default: smooth, saturating curves."""
  rows = []
  for e in range(1, epochs + 1):
    t = 1 - math.exp(-3 * e / epochs)
    t /= 1 - math.exp(-3)
    lerp = lambda ab: ab[0] + (ab[1] - ab[0]) * t
    va = val_acc_curve[e - 1] if val_acc_curve else lerp(val_acc)
    rows.append({
        "step": 1000 * e, "epoch": e, "lr": 1e-3, "train_loss": lerp(train_loss), "train_accuracy": lerp(train_acc),
        "grad_norm": 1.0, "update_ratio": update_ratio if e == 1 else update_ratio / 2,
        "val_loss": val_loss_curve[e - 1] if val_loss_curve else lerp(val_loss), "val_accuracy": va,
        "val_balanced_accuracy": va, "val_macro_f1": va,
        "val_per_class_recall": recall or [va] * K, "val_per_class_precision": [va] * K,
        "val_pred_histogram": [600] * K,
        "val_confusion": confusion or (np.eye(K, dtype=int) * 550 + 5).tolist()})
  rows[-1]["test_accuracy"] = rows[-1]["val_accuracy"] - 0.01
  return rows


def _audit(counts=None, drift_ks=0.01, exact_dups=0, val_counts=None):
  counts = counts or [5400] * K
  val_counts = val_counts or [600] * K
  def split(c):
    present = [x for x in c if x]
    return {"count": sum(c), "class_counts": c, "imbalance_ratio": max(present) / min(present),
            "missing_classes": [], "labels_out_of_range": 0, "label_range": [0, K - 1], "pixel_range": [0, 255],
            "brightness": {"mean": 0.29, "std": 0.1, "histogram": [1] * 20, "histogram_range": [0, 1]},
            "contrast": {"mean": 0.33, "std": 0.05, "histogram": [1] * 20, "histogram_range": [0, 1]},
            "channel_means": [0.29]}
  return {"num_classes": K, "class_names": [f"c{i}" for i in range(K)],
          "splits": {"train": split(counts), "validation": split(val_counts)},
          "drift": {"validation": {"brightness": {"ks": drift_ks, "standardized_mean_difference": 0.0},
                                   "contrast": {"ks": drift_ks / 2, "standardized_mean_difference": 0.0}}},
          "duplicates": {"validation": {"exact": exact_dups, "exact_fraction": exact_dups / 6000, "near": exact_dups,
                                        "near_fraction": exact_dups / 6000, "exact_examples": [],
                                        "near_examples": []}}}


def _run(tmp_path, rows=None, audit_dict=None, **config_fields):
  config = default.get_config()
  for path, value in config_fields.items():
    node = config
    parts = path.split("__")
    for part in parts[:-1]:
      node = node[part]
    node[parts[-1]] = value
  workdir = str(tmp_path)
  rundir.write_or_check_config(workdir, config)
  with open(os.path.join(workdir, rundir.METRICS_FILE), "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in (_rows() if rows is None else rows))
  rundir.write_json(workdir, rundir.AUDIT_FILE, audit_dict or _audit())
  return rules.diagnose(workdir)


def _top(result):
  return result["findings"][0]["cause"] if result["findings"] else "healthy"


def _causes(result, severity=None):
  return {f["cause"] for f in result["findings"] if severity is None or f["severity"] == severity}


def test_healthy_history_is_healthy(tmp_path):
  result = _run(tmp_path)
  assert result["verdict"] == "healthy" and not _causes(result, "high")


def test_overfitting_fires_and_borderline_does_not(tmp_path):
  losses = [0.30, 0.27, 0.25, 0.25, 0.26, 0.27, 0.29, 0.30, 0.31, 0.32]
  result = _run(tmp_path / "a", _rows(train_acc=(0.9, 0.99), val_acc=(0.89, 0.91), train_loss=(0.3, 0.03),
                                      val_loss_curve=losses))
  assert _top(result) == "overfitting" and result["findings"][0]["severity"] == "high"
  assert result["findings"][0]["fix"]["overrides"]["config.model.dropout_rate"] == 0.7
  # just inside both thresholds: val loss 8% above its minimum, accuracy gap 3 points
  gentle = [0.30, 0.27, 0.25, 0.25, 0.255, 0.26, 0.265, 0.27, 0.27, 0.27]
  result = _run(tmp_path / "b", _rows(train_acc=(0.88, 0.94), val_acc=(0.88, 0.91), val_loss_curve=gentle))
  assert "overfitting" not in _causes(result)


def test_a_validation_loss_still_falling_at_the_end_is_not_a_rise(tmp_path):
  """A run of few steps whose validation loss falls to its last evaluation: the median of its last third lies
  above that minimum by the fall itself (25% in a 50-step run on sklearn's digits), which is no overfitting;
  one evaluation later, above the minimum, the same curve is read as before."""
  falling = [2.2 - 0.16 * e for e in range(10)]  # 2.2 ... 0.76, the minimum last
  rows = _rows(train_acc=(0.4, 0.80), val_acc=(0.45, 0.90), train_loss=(2.0, 0.8), val_loss_curve=falling)
  assert "overfitting" not in _causes(_run(tmp_path / "a", rows))
  turned = _rows(train_acc=(0.4, 0.95), val_acc=(0.45, 0.90), train_loss=(2.0, 0.1),
                 val_loss_curve=falling[:7] + [1.0, 1.2, 1.3])
  finding = next(f for f in _run(tmp_path / "b", turned)["findings"] if f["cause"] == "overfitting")
  assert finding["explanation"].startswith("The model memorises its training set")
  gentle = _rows(train_acc=(0.4, 0.90), val_acc=(0.45, 0.90), train_loss=(2.0, 0.3),
                 val_loss_curve=falling[:7] + [1.0, 1.2, 1.3])  # the rise alone, no accuracy gap
  finding = next(f for f in _run(tmp_path / "c", gentle)["findings"] if f["cause"] == "overfitting")
  assert finding["explanation"].startswith("The model grows confident on the validation images it gets wrong")
  # The accuracy gap alone, the loss still falling: the text does not cite a rise it did not see.
  gap = _rows(train_acc=(0.4, 0.99), val_acc=(0.45, 0.90), train_loss=(2.0, 0.05), val_loss_curve=falling)
  finding = next(f for f in _run(tmp_path / "d", gap)["findings"] if f["cause"] == "overfitting")
  assert finding["evidence"]["val_loss_still_falling"] and "above its minimum" not in finding["explanation"]


def _cut_short(val_loss_curve=(0.6, 0.45, 0.35), **kw):
  """Three evaluations of a run stopped while validation still climbed (89% after 86%)."""
  return _rows(epochs=3, val_acc_curve=[0.80, 0.86, 0.89], val_loss_curve=list(val_loss_curve), **kw)


def test_a_run_stopped_while_still_learning_underfits_by_training_too_short(tmp_path):
  result = _run(tmp_path / "a", _cut_short(), num_epochs=3)
  finding = next(f for f in result["findings"] if f["cause"] == "underfitting")
  assert result["verdict"] == "problems_found" and finding["severity"] == "high"
  assert finding["evidence"]["still_learning"]["fired_on"] == ["val_accuracy"]  # 3 points, 0.33 an error
  assert finding["fix"]["overrides"] == {"config.num_epochs": 6} and "options" not in finding["fix"]
  assert finding["explanation"].startswith("The run stopped while it was still learning")
  # Batches of 512: a quarter of the batch is the second option.
  finding = next(f for f in _run(tmp_path / "b", _cut_short(), num_epochs=3, batch_size=512)["findings"]
                 if f["cause"] == "underfitting")
  assert [o["name"] for o in finding["fix"]["options"]] == ["longer", "smaller_batch"]
  assert finding["fix"]["options"][1]["overrides"] == {"config.batch_size": 128}
  # A converged run's last third gains 0.3 points: no finding (the healthy history above).
  assert not _causes(_run(tmp_path / "c"))


def test_still_learning_on_few_validation_images_needs_the_loss(tmp_path):
  """On 150 validation images 3 points are 4.5 images: no evidence alone (10 needed; on 400 images, 12 are weak
  evidence, medium: 1.9 standard errors); a validation loss that fell by 0.13 ln K in the last third to its
  minimum is strong."""
  few = _audit(val_counts=[15] * K)
  assert "underfitting" not in _causes(_run(tmp_path / "a", _cut_short(), few, num_epochs=3))
  result = _run(tmp_path / "c", _cut_short(), _audit(val_counts=[40] * K), num_epochs=3)
  assert result["verdict"] == "healthy" and _causes(result) == _causes(result, "medium") == {"underfitting"}
  finding = next(f for f in _run(tmp_path / "b", _cut_short((1.5, 0.9, 0.6)), few, num_epochs=3)["findings"]
                 if f["cause"] == "underfitting")
  assert finding["severity"] == "high" and "val_loss" in finding["evidence"]["still_learning"]["fired_on"]


def test_still_learning_joins_an_underfitting_finding_and_yields_to_a_slow_rate(tmp_path):
  # The loss reads 0.22 ln K: underfitting by the loss (medium), now high, twice the epochs first, no duplicate.
  rows = _cut_short(train_loss=(1.2, 0.5), train_acc=(0.75, 0.88))
  findings = [f for f in _run(tmp_path / "a", rows, num_epochs=3)["findings"] if f["cause"] == "underfitting"]
  assert len(findings) == 1 and findings[0]["severity"] == "high"
  assert "train_loss_over_ln_k" in findings[0]["evidence"] and "still_learning" in findings[0]["evidence"]
  assert [o["name"] for o in findings[0]["fix"]["options"]] == ["longer", "wider"]
  # A rate too low explains the slow learning itself: its finding stands alone.
  result = _run(tmp_path / "b", _cut_short(update_ratio=1e-4), num_epochs=3, optim__learning_rate=1e-5)
  assert _top(result) == "lr_too_low" and "underfitting" not in _causes(result)


def test_still_learning_needs_a_finished_run_and_a_run_that_learned(tmp_path):
  # Interrupted after 3 of 25 epochs: resumed, not lengthened.
  assert "underfitting" not in _causes(_run(tmp_path / "a", _cut_short(), num_epochs=25))
  # Near chance (13%, 2 points gained, 7 standard errors): near_chance's treatment, not "train longer".
  rows = _rows(epochs=3, val_acc_curve=[0.10, 0.11, 0.13], val_loss_curve=[2.3, 2.2, 2.0], train_loss=(2.3, 2.0),
               train_acc=(0.1, 0.13))
  finding = next(f for f in _run(tmp_path / "b", rows, num_epochs=3)["findings"] if f["cause"] == "underfitting")
  assert "still_learning" not in finding["evidence"] and finding["severity"] == "high"


def test_a_levelled_loss_finding_keeps_its_option_named_beside_training_longer(tmp_path):
  """The loss rule's fix of one option (a wider model: the loss levelled off) stores only its overrides; merged
  with strong still-learning evidence it is still the option named `wider`."""
  rows = _cut_short(train_loss=(0.5, 0.5), train_acc=(0.82, 0.88))  # 0.22 ln K, flat
  finding = next(f for f in _run(tmp_path, rows, num_epochs=3)["findings"] if f["cause"] == "underfitting")
  assert [o["name"] for o in finding["fix"]["options"]] == ["longer", "wider"]
  assert finding["severity"] == "high" and finding["confidence"] >= 0.8


def test_a_rate_too_low_by_the_range_test_alone_does_not_hide_a_run_cut_short(tmp_path):
  _lr_find(tmp_path, at_min=0.2, suggestion=0.02)  # 200x the rate: lr_too_low by the test alone
  result = _run(tmp_path, _cut_short(update_ratio=2e-3), num_epochs=3)
  assert {"lr_too_low", "underfitting"} <= _causes(result)
  finding = next(f for f in result["findings"] if f["cause"] == "underfitting")
  assert finding["severity"] == "high" and "still_learning" in finding["evidence"]
  # A run cut short is no small model: the rate's finding is not lowered for it (lr_test_yields_to_capacity).
  assert next(f for f in result["findings"] if f["cause"] == "lr_too_low")["severity"] == "high"


def test_still_learning_by_the_loss_needs_no_accuracy_peak_and_says_so(tmp_path):
  rows = _rows(epochs=6, val_acc_curve=[0.70, 0.78, 0.82, 0.84, 0.88, 0.87],  # the best one evaluation before the end
               val_loss_curve=[1.5, 1.1, 0.9, 0.8, 0.65, 0.5])  # 0.13 ln K over the last third, to its minimum
  finding = next(f for f in _run(tmp_path, rows, audit_dict=_audit(val_counts=[15] * K), num_epochs=6)["findings"]
                 if f["cause"] == "underfitting")
  assert finding["severity"] == "high" and finding["evidence"]["still_learning"]["fired_on"] == ["val_loss"]
  assert "to its lowest at the last evaluation" in finding["explanation"] and "its best" not in finding["explanation"]


def test_a_run_stopped_early_is_not_still_learning(tmp_path):
  rundir.write_json(str(tmp_path), rundir.EARLY_STOP_FILE, {"epoch": 3, "step": 3000, "patience": 2})
  result = _run(tmp_path, _cut_short(), num_epochs=10)  # (its stop is read by the early-stopping rule, below)
  assert not any("still_learning" in f["evidence"] for f in result["findings"])


def _stopped(tmp_path, val_acc, val_loss, *, epochs=30, patience=1, **config_fields):
  """A run that early stopping ended at its last evaluation (len(val_acc) of `epochs`)."""
  rows = _rows(epochs=len(val_acc), val_acc_curve=list(val_acc), val_loss_curve=list(val_loss))
  best = val_acc.index(max(val_acc))
  rundir.write_json(str(tmp_path), rundir.EARLY_STOP_FILE, {"epoch": len(val_acc), "step": rows[-1]["step"],
                                                            "patience": patience, "best_epoch": best + 1})
  return _run(tmp_path, rows, num_epochs=epochs, early_stopping_patience=patience, **config_fields)


# mnist5k's recipe at patience 1 (runs/probe5k/runs/es1): a tie at epoch 6 of 30 while the loss was at its lowest.
_CLIMBING = ([0.901, 0.948, 0.962, 0.963, 0.970, 0.970], [0.310, 0.194, 0.145, 0.126, 0.113, 0.114])


def test_a_patience_shorter_than_the_noise_stopped_a_run_still_learning(tmp_path):
  result = _stopped(tmp_path, *_CLIMBING)
  finding = next(f for f in result["findings"] if f["cause"] == "underfitting")
  assert result["verdict"] == "problems_found" and finding["severity"] == "high"
  evidence = finding["evidence"]["early_stop"]
  assert (evidence["stopped_at_epoch"], evidence["unused_share"], evidence["best_epoch"]) == (6, 0.8, 5)
  assert evidence["dip_after_best"] == 0.0 and evidence["val_loss_lowest_epoch"] == 5
  assert [o["overrides"] for o in finding["fix"]["options"]] == [{"config.early_stopping_patience": 5},
                                                                 {"config.early_stopping_patience": 0}]
  assert finding["explanation"].startswith("Early stopping ended the run at epoch 6 of 30 (patience 1)")
  assert "early_stopping_patience 1 -> 5" in finding["fix"]["summary"]


def test_a_stop_after_a_third_of_the_budget_is_medium_and_a_late_one_is_none(tmp_path):
  acc, loss = _CLIMBING
  # Patience 2: no better accuracy for two evaluations after epoch 4's (a tie counts as none), 40% of 10 untrained.
  medium = _stopped(tmp_path / "a", [0.901, 0.948, 0.962, 0.970, 0.969, 0.970],
                    [0.310, 0.194, 0.145, 0.113, 0.112, 0.114], epochs=10, patience=2)
  finding = next(f for f in medium["findings"] if f["cause"] == "underfitting")
  assert finding["severity"] == "medium" and medium["verdict"] == "healthy"
  assert finding["fix"]["options"][0]["overrides"] == {"config.early_stopping_patience": 8}  # 4x, above 5
  late = _stopped(tmp_path / "b", acc, loss, epochs=7)  # 1 of 7 untrained: little left to gain
  assert not any("early_stop" in f["evidence"] for f in late["findings"])


def _stop_at_last(tmp_path, rows, patience=1):
  rundir.write_json(str(tmp_path), rundir.EARLY_STOP_FILE, {"epoch": rows[-1]["epoch"], "step": rows[-1]["step"],
                                                            "patience": patience, "best_epoch": rows[-1]["epoch"]})


def test_a_stop_too_soon_joins_an_underfitting_finding_and_replaces_its_longer_training(tmp_path):
  rows = _rows(epochs=6, train_loss=(0.9, 0.6), train_acc=(0.7, 0.78), val_acc=(0.71, 0.785))
  for e, row in enumerate(rows):
    row["train_loss"] = 0.85 - 0.05 * e  # still falling by 14% over the last third: `longer` among its options
  _stop_at_last(tmp_path / "a", rows)
  finding = _run(tmp_path / "a", rows, num_epochs=30, early_stopping_patience=1,
                 model__name="ConvNet", model__widths=(2, 4))["findings"][0]
  assert finding["cause"] == "underfitting" and finding["severity"] == "high"
  assert "train_loss_over_ln_k" in finding["evidence"] and "early_stop" in finding["evidence"]
  # Trained longer with the same patience it would stop where it did: more patience, none, or a wider model.
  assert [o["name"] for o in finding["fix"]["options"]] == ["more_patience", "no_early_stopping", "wider"]
  assert finding["fix"]["summary"].startswith("Give early stopping more patience")
  assert "Use a wider model." in finding["fix"]["summary"] and "longer" not in finding["fix"]["summary"]
  assert "Early stopping ended the run at epoch 6 of 30" in finding["explanation"]
  # Near chance the finding keeps no fix, so that --verify's lever menu looks for the cause; the stop is said.
  rows = _rows(epochs=6, train_loss=(0.52, 0.26), train_acc=(0.12, 0.12), val_acc=(0.12, 0.12))
  _stop_at_last(tmp_path / "b", rows)
  result = _run(tmp_path / "b", rows, num_epochs=30, early_stopping_patience=1)
  assert [f["cause"] for f in result["findings"]] == ["underfitting"]
  finding = result["findings"][0]
  assert finding["fix"]["overrides"] == {} and "--verify" in finding["fix"]["summary"]
  assert "early_stop" in finding["evidence"] and "early_stopping_patience 1 -> 5" in finding["explanation"]


def test_a_stop_where_the_model_began_to_overfit_is_what_early_stopping_is_for(tmp_path):
  # The loss lowest at epoch 4, rising for 6 evaluations by the stop; accuracy's best at epoch 7, patience 3.
  acc = [0.85, 0.88, 0.895, 0.90, 0.903, 0.905, 0.907, 0.905, 0.904, 0.906]
  loss = [0.40, 0.33, 0.30, 0.29, 0.295, 0.30, 0.31, 0.32, 0.33, 0.345]
  result = _stopped(tmp_path / "a", acc, loss, patience=3)
  assert not any("early_stop" in f["evidence"] for f in result["findings"])
  # A real drop after the best (3 points, against 0.8 points of noise on 6,000 images) is not noise either.
  dropped = _stopped(tmp_path / "b", [0.85, 0.88, 0.90, 0.87], [0.40, 0.33, 0.30, 0.30], patience=1)
  assert not any("early_stop" in f["evidence"] for f in dropped["findings"])
  # Nor does a stop file that names another evaluation than the last (a stale one), nor a run without one.
  fires = _stopped(tmp_path / "c", *_CLIMBING)
  assert any("early_stop" in f["evidence"] for f in fires["findings"])
  rundir.write_json(str(tmp_path / "c"), rundir.EARLY_STOP_FILE, {"epoch": 5, "step": 5000, "patience": 1})
  assert not any("early_stop" in f["evidence"] for f in rules.diagnose(str(tmp_path / "c"))["findings"])
  os.remove(tmp_path / "c" / rundir.EARLY_STOP_FILE)
  assert not any("early_stop" in f["evidence"] for f in rules.diagnose(str(tmp_path / "c"))["findings"])


def test_a_short_ratio_the_range_test_contradicts_leaves_the_underfitting_rule_its_say(tmp_path):
  """50 steps at a ratio of 9.6e-3 (sklearn's digits in batches of 512): weak evidence of a rate too high, which the
  run's range test contradicts (the rate 1/40 of the sweep's minimum); the training loss, 0.22 ln K and flat, is
  then read by the underfitting rule, not explained away by the rate."""
  rows = _rows(update_ratio=9.6e-3, train_loss=(0.5, 0.5), train_acc=(0.85, 0.86), val_acc=(0.85, 0.86),
               val_loss=(0.45, 0.45))
  for row in rows:
    row["step"] = 5 * row["epoch"]
  _lr_find(tmp_path, at_min=0.04, suggestion=4e-3)
  result = _run(tmp_path, rows, num_epochs=10)
  assert "lr_too_high" not in _causes(result) and "underfitting" in _causes(result)


@pytest.mark.parametrize("ratio,fires", [(8e-3, True), (4.5e-3, False)])
def test_lr_too_high_from_the_update_ratio(tmp_path, ratio, fires):
  result = _run(tmp_path, _rows(update_ratio=ratio, train_loss=(0.9, 0.6), train_acc=(0.7, 0.78),
                                val_acc=(0.7, 0.79)))
  assert (_top(result) == "lr_too_high") == fires
  if fires:
    assert result["findings"][0]["fix"]["overrides"] == {"config.optim.learning_rate": 1e-4}


@pytest.mark.parametrize("steps_per_epoch,severity", [(62, "medium"), (140, "medium"), (150, "high")])
def test_a_high_update_ratio_over_fewer_steps_than_its_window_is_only_medium(tmp_path, steps_per_epoch, severity):
  """A quick run (1 epoch of 2,000 examples: 62 steps) averages only its first, largest updates: the ratio
  then says little (healthy runs read 7.3e-3 there), and the finding is medium; 10 epochs of 150 steps fill
  the 1,500-step window and the same ratio is high evidence again."""
  rows = _rows(update_ratio=8e-3, train_loss=(0.9, 0.6), train_acc=(0.7, 0.78), val_acc=(0.7, 0.79))
  for row in rows:
    row["step"] = steps_per_epoch * row["epoch"]
    row["update_ratio"] = 8e-3
  finding = next(f for f in _run(tmp_path, rows)["findings"] if f["cause"] == "lr_too_high")
  assert finding["severity"] == severity
  assert finding["evidence"]["ratio_window_steps"] == min(10 * steps_per_epoch, -(-1500 // steps_per_epoch) * steps_per_epoch)
  if severity == "medium":
    assert f"over only {10 * steps_per_epoch} steps, fewer than the 1500" in finding["explanation"]
    # The run's own range test puts the rate at 1/5 of its suggestion: the weak ratio is contradicted, no finding.
    _lr_find(tmp_path / "contradicted", at_min=0.05, suggestion=5e-3)
    assert "lr_too_high" not in _causes(_run(tmp_path / "contradicted", rows))


@pytest.mark.parametrize("ratio,fires", [(1e-4, True), (4e-4, False)])
def test_lr_too_low_from_the_update_ratio(tmp_path, ratio, fires):
  result = _run(tmp_path, _rows(update_ratio=ratio, train_loss=(1.6, 0.7), train_acc=(0.5, 0.75),
                                val_acc=(0.5, 0.76)), optim__learning_rate=1e-5)
  assert ("lr_too_low" in _causes(result)) == fires
  if fires:
    assert _top(result) == "lr_too_low"
    assert result["findings"][0]["fix"]["overrides"] == {"config.optim.learning_rate": 1e-4}


def _decaying(rows, lr_at_epoch, *, freeze=True):
  """rows with the logged rate (and the update ratio with it) at each epoch's end set by lr_at_epoch(epoch), and
  (`freeze`) validation accuracy flat from the first evaluation whose rate is under 1% of 1e-3, as a run's is."""
  frozen = None
  for row in rows:
    row["lr"] = lr_at_epoch(row["epoch"])
    row["update_ratio"] = 3e-3 * row["lr"] / 1e-3
    if freeze and row["lr"] < 1e-5:
      frozen = row["val_accuracy"] if frozen is None else frozen
      row["val_accuracy"] = frozen
  return rows


@pytest.mark.parametrize("decay_steps,expected", [
    (300, "high"),     # under 1% of the peak from epoch 4 of 10: 60% of the steps
    (400, "medium"),   # ... from epoch 6 of 10: 40% of the steps
    (500, "medium"),   # ... from epoch 7 of 10: 30%
    (600, None),       # ... from epoch 8: 20%, under the quarter the rule asks for
    (5000, None)])     # the recipe's own decay: 0.70 ** 2 = 0.49x at the end
def test_lr_too_low_from_a_schedule_that_decays_too_fast(tmp_path, decay_steps, expected):
  """An exponential decay (1000 steps an epoch here) that takes the rate under 1% of its peak for a quarter of the run
  or more: lr_too_low from the schedule alone, its fix a slower decay or a cosine schedule (README, "A schedule that
  decays too fast")."""
  rows = _decaying(_rows(), lambda epoch: 1e-3 * 0.7 ** (1000 * epoch / decay_steps))
  result = _run(tmp_path, rows, optim__decay_steps=decay_steps, num_epochs=10)
  finding = next((f for f in result["findings"] if f["cause"] == "lr_too_low"), None)
  assert (finding and finding["severity"]) == expected
  if expected:
    assert finding["evidence"]["fired_on"] == ["schedule"]
    share = finding["evidence"]["schedule"]["share_of_steps_under_floor"]
    assert share == pytest.approx({300: 0.6, 400: 0.4, 500: 0.3}[decay_steps])
    steps = math.ceil(10_000 * math.log(0.7) / math.log(0.1))  # the rate ends the run at 10% of its peak
    assert [(o["name"], o["overrides"]) for o in finding["fix"]["options"]] == [
        ("slower_decay", {"config.optim.decay_steps": steps}), ("cosine", {"config.optim.schedule": "cosine"})]
    assert "decays too fast" in finding["explanation"] and f"last {share:.0%} of the run" in finding["explanation"]
    assert result["verdict"] == ("problems_found" if expected == "high" else "healthy")
  if decay_steps == 300:  # validation still gaining a point under the floor: the small rate did some work, medium
    rows = _decaying(_rows(), lambda epoch: 1e-3 * 0.7 ** (1000 * epoch / decay_steps), freeze=False)
    finding = next(f for f in _run(tmp_path / "gaining", rows, optim__decay_steps=300)["findings"]
                   if f["cause"] == "lr_too_low")
    assert finding["severity"] == "medium" and "still gained" in finding["explanation"]


def test_a_cosine_schedule_a_warm_up_and_a_step_schedule_are_not_a_decay_too_fast(tmp_path):
  # A cosine to zero: under 1% only at its last evaluation. A warm-up starts under 1% of the peak: not "kept there".
  cosine = _decaying(_rows(), lambda epoch: 1e-3 * 0.5 * (1 + math.cos(math.pi * epoch / 10)))
  assert "lr_too_low" not in _causes(_run(tmp_path / "cosine", cosine, optim__schedule="cosine"))
  warm = _decaying(_rows(), lambda epoch: 1e-3 * min(1.0, epoch / 3) * (1e-3 if epoch == 1 else 1.0))
  assert "lr_too_low" not in _causes(_run(tmp_path / "warm", warm, optim__schedule="warmup_cosine"))
  # A step schedule, 0.2x at 30%, 60% and 80% of the run (as wide ResNets train): under 1% for its last 20%.
  steps = _decaying(_rows(), lambda epoch: 1e-3 * 0.2 ** sum(epoch > e for e in (3, 6, 8)))
  assert "lr_too_low" not in _causes(_run(tmp_path / "steps", steps, optim__schedule="constant"))
  # ... and one whose last step comes at 60% of the run: under 1% for its last 40%.
  early = _decaying(_rows(), lambda epoch: 1e-3 * 0.2 ** sum(epoch > e for e in (2, 4, 6)))
  assert "lr_too_low" in _causes(_run(tmp_path / "early", early, optim__schedule="constant"))


def test_the_slower_decay_for_a_staircase_and_for_a_run_stopped_early(tmp_path):
  def options(name, **fields):
    rows = _decaying(_rows(), lambda epoch: 1e-3 * 0.7 ** (1000 * epoch / 300))
    finding = next(f for f in _run(tmp_path / name, rows, optim__decay_steps=300, **fields)["findings"]
                   if f["cause"] == "lr_too_low")
    fix = finding["fix"]
    return {o["name"]: o["overrides"] for o in fix.get("options", [{"name": "one", "overrides": fix["overrides"]}])}, \
        fix["summary"]
  # A staircase drops by decay_rate at whole periods: 6 drops of 0.7 (to 12%) over the run's 10,000 steps.
  found, summary = options("staircase", optim__staircase=True, num_epochs=10)
  assert found["slower_decay"] == {"config.optim.decay_steps": 10_000 // 6} and "ends the run at 12%" in summary
  # ... one drop of 0.05 is already more than 10x: no slower staircase, the cosine schedule alone.
  found, _ = options("one_drop", optim__staircase=True, optim__decay_rate=0.05, num_epochs=10)
  assert found == {"one": {"config.optim.schedule": "cosine"}}
  # A run stopped after 10 of its 20 epochs had 20,000 steps to go through: the slower decay spans them all.
  found, _ = options("stopped", num_epochs=20)
  assert found["slower_decay"] == {"config.optim.decay_steps": math.ceil(20_000 * math.log(0.7) / math.log(0.1))}


def test_a_decay_too_fast_beside_a_low_rate_by_the_range_test_offers_both(tmp_path):
  _lr_find(tmp_path, at_min=0.2, suggestion=0.02)  # 200x the rate
  rows = _decaying(_rows(), lambda epoch: 1e-3 * 0.7 ** (1000 * epoch / 300))
  finding = next(f for f in _run(tmp_path, rows, optim__decay_steps=300)["findings"] if f["cause"] == "lr_too_low")
  assert finding["evidence"]["fired_on"] == ["lr_range_test", "schedule"] and finding["severity"] == "high"
  assert [o["name"] for o in finding["fix"]["options"]] == ["slower_decay", "cosine", "higher_rate"]
  summary = finding["fix"]["summary"]
  assert summary.startswith("Decay the rate more slowly") and "Or raise the" in summary
  # With the training loss levelled off, the schedule alone makes it high, and the text says what --verify trains.
  os.makedirs(tmp_path / "flat")
  _lr_find(tmp_path / "flat", at_min=0.2, suggestion=0.02)
  flat = _decaying(_rows(train_loss=(0.3, 0.3)), lambda epoch: 1e-3 * 0.7 ** (1000 * epoch / 300))
  finding = next(f for f in _run(tmp_path / "flat", flat, optim__decay_steps=300)["findings"]
                 if f["cause"] == "lr_too_low")
  assert finding["severity"] == "high" and "weaker evidence" not in finding["explanation"]
  assert "trains the slower decay and the higher rate" in finding["explanation"]


def _lr_find(workdir, at_min, suggestion):
  rundir.write_json(str(workdir), rundir.LR_FIND_FILE, {"suggestion": suggestion, "lr_at_min_loss": at_min,
                                                        "method": "steepest descent before the minimum"})


@pytest.mark.parametrize("optimizer,lr,at_min,still,expected", [
    ("adam", 1e-4, 0.017, True, "high"),     # Adam 1e-4 on Fashion-MNIST's seed model: the minimum 168x above
    ("adam", 1e-4, 0.017, False, "medium"),  # ... but the training loss had levelled off
    ("adam", 1e-3, 0.047, True, None),       # the digits' healthy seed 2, the farthest of Adam's healthy runs
    ("sgd", 1e-3, 0.042, True, "high"),      # SGD at Adam's rate: 3.9 points below SGD at 1e-2
    ("sgd", 1e-2, 0.19, True, None),         # ... and at 1e-2, the farthest of SGD's healthy runs
    ("sgd", 0.1, 0.39, True, None)])         # a ResNet-20 with SGD at 0.1
def test_lr_too_low_from_the_runs_own_lr_range_test(tmp_path, optimizer, lr, at_min, still, expected):
  """The early update ratio at Adam 1e-4 (3.8-5.1e-4) sits above its threshold; the run's own LR range test
  says the loss still fell at rates 100x higher."""
  _lr_find(tmp_path, at_min, at_min / 11)
  rows = _rows(update_ratio=4.5e-4, train_loss=(0.9, 0.3), train_acc=(0.7, 0.88), val_acc=(0.71, 0.87))
  for e, row in enumerate(rows):  # ending under the underfitting threshold (0.16 ln K = 0.37)
    row["train_loss"] = 0.9 - 0.06 * (e + 1) if still else max(0.3, 0.9 - 0.1 * (e + 1))
  result = _run(tmp_path, rows, optim__learning_rate=lr, optim__optimizer=optimizer)
  finding = next((f for f in result["findings"] if f["cause"] == "lr_too_low"), None)
  assert (finding and finding["severity"]) == expected
  if expected:
    assert result["findings"][0] is finding
    assert finding["evidence"]["lr_find_minimum_over_rate"] == pytest.approx(at_min / lr)
    assert finding["fix"]["overrides"] == {"config.optim.learning_rate": float(f"{at_min / 11:.2g}")}
    assert f"{at_min / lr:.0f}x the rate" in finding["explanation"]
    assert result["verdict"] == ("problems_found" if expected == "high" else "healthy")


@pytest.mark.parametrize("optimizer,lr,at_min,suggestion,fires", [
    ("adam", 2e-2, 0.017, 1.5e-3, True),    # the lr_too_high fault's sweep: beyond its loss minimum
    ("sgd", 1e-2, 0.02, 9e-4, False)])      # a good SGD rate 11x a low steepest point, at 1/2 of the minimum
def test_lr_too_high_by_the_range_test_needs_the_rate_near_the_sweeps_minimum(tmp_path, optimizer, lr, at_min,
                                                                              suggestion, fires):
  _lr_find(tmp_path, at_min, suggestion)
  result = _run(tmp_path, _rows(), optim__learning_rate=lr, optim__optimizer=optimizer)
  assert ("lr_too_high" in _causes(result, "medium")) == fires


def test_lr_too_low_from_the_range_test_alone_yields_to_a_model_that_cannot_fit(tmp_path):
  """faults/underfitting.py's ConvNet of 1 and 2 channels, seed 2: its sweep bottoms out 155x above its rate, and
  10x the rate gained +0.10 points; the model's capacity is what binds."""
  _lr_find(tmp_path, 0.155, 0.018)
  rows = _rows(train_loss=(0.9, 0.62), train_acc=(0.7, 0.78), val_acc=(0.71, 0.785), update_ratio=1.8e-3)
  result = _run(tmp_path, rows, model__name="ConvNet", model__widths=(1, 2))
  assert [(f["cause"], f["severity"]) for f in result["findings"]][:2] == [("underfitting", "high"),
                                                                          ("lr_too_low", "medium")]
  assert result["findings"][1]["evidence"]["fired_on"] == ["lr_range_test"]
  # With the update ratio low too, the rate is measured twice: it stays high.
  _lr_find(tmp_path, 0.155, 0.018)
  rows = _rows(train_loss=(0.9, 0.62), train_acc=(0.7, 0.78), val_acc=(0.71, 0.785), update_ratio=1e-4)
  low = next(f for f in _run(tmp_path, rows, model__name="ConvNet", model__widths=(1, 2))["findings"]
             if f["cause"] == "lr_too_low")
  assert low["severity"] == "high" and low["evidence"]["fired_on"] == ["update_ratio", "lr_range_test"]


def test_lr_fix_uses_the_lr_range_test_where_it_moves_the_rate_the_right_way(tmp_path):
  rundir.write_json(str(tmp_path / "a"), rundir.LR_FIND_FILE, {"suggestion": 0.0006})
  result = _run(tmp_path / "a", _rows(update_ratio=5e-2))  # too high at 1e-3: the test suggests lower
  assert result["findings"][0]["fix"]["overrides"] == {"config.optim.learning_rate": 0.0006}
  assert "the LR range test's suggestion" in result["findings"][0]["fix"]["summary"]
  # The BatchNorm ConvNet's ratio reads high at a good 2e-3, and its sweep suggests up to 4.2e-3: no fix "lowers"
  # the rate to that; the finding falls back to a tenth of the rate.
  rundir.write_json(str(tmp_path / "b"), rundir.LR_FIND_FILE, {"suggestion": 0.0042})
  result = _run(tmp_path / "b", _rows(update_ratio=5e-2), optim__learning_rate=2e-3)
  assert result["findings"][0]["fix"]["overrides"] == {"config.optim.learning_rate": 0.0002}


def test_underfitting_a_small_model(tmp_path):
  result = _run(tmp_path / "a", _rows(train_loss=(0.9, 0.62), train_acc=(0.7, 0.78), val_acc=(0.71, 0.785)),
                model__name="ConvNet", model__widths=(2, 4))
  assert _top(result) == "underfitting"
  assert result["findings"][0]["fix"]["overrides"]["config.model.widths"] == [32, 32]
  result = _run(tmp_path / "b", _rows(train_loss=(0.6, 0.35), train_acc=(0.8, 0.86), val_acc=(0.8, 0.86)))
  assert "underfitting" not in _causes(result)  # 0.35 / ln 10 = 0.152 < 0.16


def _with_pixel_reference(accuracy, validation=5000, **audit_fields):
  return {**_audit(**audit_fields), "pixel_reference": {
      "accuracy": accuracy, "errors": round((1 - accuracy) * validation), "train_examples": 54000,
      "validation_examples": validation}}


@pytest.mark.parametrize("lookup_accuracy,fires", [(0.91, True), (0.908, False), (0.85, False)])
def test_a_run_no_better_than_a_pixel_lookup_underfits(tmp_path, lookup_accuracy, fires):
  """The default history's best validation error is 8.2%: 0.911x a lookup at 91% (fires), 0.891x at 90.8%."""
  result = _run(tmp_path, audit_dict=_with_pixel_reference(lookup_accuracy))
  assert (_causes(result, "high") == {"underfitting"}) == fires
  assert result["verdict"] == ("problems_found" if fires else "healthy")
  if fires:
    finding = result["findings"][0]
    assert finding["evidence"]["pixel_reference"]["ratio"] == pytest.approx(0.082 / 0.09, abs=1e-4)
    assert finding["fix"]["overrides"]["config.model.name"] == "ConvNet"  # the loss levelled off: wider
    assert "nearest-neighbour lookup" in finding["explanation"]


def test_the_pixel_lookup_needs_enough_errors_and_no_other_cause(tmp_path):
  few = _run(tmp_path / "few", audit_dict=_with_pixel_reference(0.91, validation=200))  # 18 errors
  assert few["verdict"] == "healthy"
  slow = _run(tmp_path / "lr", _rows(update_ratio=1e-4), audit_dict=_with_pixel_reference(0.95))
  assert _top(slow) == "lr_too_low" and "underfitting" not in _causes(slow)
  tail = _run(tmp_path / "tail", _rows(recall=[0.95] * 6 + [0.6] * 4),
              audit_dict=_with_pixel_reference(0.95, counts=[5400] * 6 + [300] * 4))
  assert _top(tail) == "class_imbalance" and "underfitting" not in _causes(tail)
  # A low finding of another cause (a long tail whose minority classes are recalled as well) does not block it.
  mild = _run(tmp_path / "mild", audit_dict=_with_pixel_reference(0.95, counts=[5400] * 8 + [1300] * 2))
  assert _causes(mild, "low") == {"class_imbalance"} and _causes(mild, "high") == {"underfitting"}


def test_a_rate_too_low_by_the_range_test_alone_does_not_hide_the_pixel_lookups_underfitting(tmp_path):
  """The digits' ConvNet of 1 and 2 channels, seed 0: its sweep bottoms out 205x above its rate, its best error
  sits near the lookup's, and 10x the rate did not help (91.10 -> 90.30%): the model is what is too small."""
  _lr_find(tmp_path, 0.2, 0.018)
  result = _run(tmp_path, audit_dict=_with_pixel_reference(0.91))
  assert [(f["cause"], f["severity"]) for f in result["findings"]] == [("underfitting", "high"),
                                                                       ("lr_too_low", "medium")]
  assert "pixel_reference" in result["findings"][0]["evidence"] and result["verdict"] == "problems_found"


def test_a_rate_too_low_by_the_range_test_keeps_its_rank_where_its_steps_are_small_or_the_run_near_chance(
    tmp_path):
  """Only steps that move the weights as a good rate's do (update ratio >= CAPACITY_RATIO) let a small model's
  evidence come first: a rate 10x too low reads 3.9-7.8e-4, and its lost accuracy may reach the pixel lookup's."""
  _lr_find(tmp_path / "slow", 0.2, 0.018)
  slow = _run(tmp_path / "slow", _rows(update_ratio=4.5e-4), audit_dict=_with_pixel_reference(0.91))
  assert [(f["cause"], f["severity"]) for f in slow["findings"]] == [("lr_too_low", "high")]
  # Near chance every finding stays high (the pixel reference, which always fires there, does not lower it).
  _lr_find(tmp_path / "chance", 0.2, 0.018)
  rows = _rows(update_ratio=3e-3, train_loss=(2.30, 2.0), train_acc=(0.10, 0.15), val_acc=(0.10, 0.16))
  chance = _run(tmp_path / "chance", rows, audit_dict=_with_pixel_reference(0.91))
  assert ("lr_too_low", "high") in [(f["cause"], f["severity"]) for f in chance["findings"]]
  # A medium underfitting (0.17 ln K) does not lower it either: both medium would read healthy.
  _lr_find(tmp_path / "medium", 0.155, 0.018)
  rows = _rows(train_loss=(0.9, 0.40), train_acc=(0.7, 0.85), val_acc=(0.71, 0.852), update_ratio=1.8e-3)
  medium = _run(tmp_path / "medium", rows, model__name="ConvNet", model__widths=(2, 4))
  assert [(f["cause"], f["severity"]) for f in medium["findings"]][:2] == [("lr_too_low", "high"),
                                                                          ("underfitting", "medium")]


def test_the_pixel_lookup_raises_an_underfitting_finding_from_the_loss(tmp_path):
  rows = _rows(train_loss=(0.9, 0.45), train_acc=(0.7, 0.84), val_acc=(0.71, 0.842))  # 0.20 ln K: medium
  medium = _run(tmp_path / "a", rows, model__name="ConvNet", model__widths=(4, 8))
  assert medium["findings"][0]["severity"] == "medium" and medium["verdict"] == "healthy"
  raised = _run(tmp_path / "b", rows, audit_dict=_with_pixel_reference(0.84), model__name="ConvNet",
                model__widths=(4, 8))
  finding = raised["findings"][0]
  assert [f["cause"] for f in raised["findings"]] == ["underfitting"] and finding["severity"] == "high"
  assert finding["evidence"]["train_loss_over_ln_k"] > 0.16 and finding["evidence"]["pixel_reference"]["ratio"] > 0.9


def test_an_underfitting_model_whose_loss_still_falls_is_offered_more_epochs_and_a_wider_model(tmp_path):
  """A slow loss on a model too small also still falls (the digits' ConvNet of 1 and 2 channels: twice its
  epochs +0.60 points, inconclusive; 32 channels +5.50): --verify trains both options."""
  rows = _rows(train_loss=(0.9, 0.62), train_acc=(0.7, 0.78), val_acc=(0.71, 0.785))
  for e, row in enumerate(rows):
    row["train_loss"] = 0.9 - 0.028 * (e + 1)  # still falling by 18% over the last third
  finding = _run(tmp_path, rows, model__name="ConvNet", model__widths=(2, 4))["findings"][0]
  assert finding["cause"] == "underfitting" and finding["fix"]["options"] == [
      {"name": "longer", "overrides": {"config.num_epochs": 50}},
      {"name": "wider", "overrides": {"config.model.name": "ConvNet", "config.model.widths": [32, 32],
                                      "config.model.hidden_units": 128}}]
  assert finding["fix"]["overrides"] == {"config.num_epochs": 50}  # the first option, before any experiment


@pytest.mark.parametrize("weight_decay,mode,top", [
    (5.0, "decoupled", "underfitting"),  # 5e-3 of the 7.8e-3 ratio can be the decay's: no rate too high
    (1e-2, "decoupled", "lr_too_high"),  # AdamW's usual decay: 1e-5 of it, the steps are the rate's
    (0.0, "decoupled", "lr_too_high"),
    (1e-2, "l2", "lr_too_high"),  # L2 decay goes through Adam's scaling: no bound to take off (but see below)
])
def test_a_strong_decoupled_weight_decay_is_not_read_as_a_rate_too_high(tmp_path, weight_decay, mode, top):
  """Fashion-MNIST's recipe at AdamW weight decay 5 read an early ratio of 7.8e-3 and `lr_too_high` (high): each
  step's decay, -lr * wd * w, is up to lr * wd = 5e-3 of the weights by itself. Without it the ratio's lower bound
  is inside the healthy band, and the loss that did not fall is underfitting, weaker regularisation first."""
  rows = _rows(update_ratio=7.8e-3, train_loss=(0.9, 0.63), train_acc=(0.7, 0.76), val_acc=(0.7, 0.765))
  for row in rows:
    row["update_ratio"] = 7.8e-3
  result = _run(tmp_path, rows, optim__weight_decay=weight_decay, optim__weight_decay_mode=mode)
  assert _top(result) == top
  if top == "underfitting":
    finding = result["findings"][0]
    assert [o["name"] for o in finding["fix"]["options"]] == ["weaker_regularization", "wider"]
    assert finding["fix"]["overrides"] == {"config.optim.weight_decay": 0.5}
    assert finding["fix"]["summary"].startswith("Weaken the regularisation (weight decay 5 -> 0.5); or use a wider")
    assert "recipe (weight decay 5, decoupled, up to 64% of each early step): a model" in finding["explanation"]
  elif weight_decay:
    finding = result["findings"][0]
    assert finding["evidence"].get("decoupled_weight_decay_share_bound") == (1e-5 if mode == "decoupled" else None)
  # An L2 decay shrinks the weights through the gradient, which raises the ratio too: the rate is still suspected,
  # and the model that cannot fit is underfitting beside it, weakening the decay among its options (last: how much
  # of the ratio is the decay's is not known).
  if mode == "l2":
    finding = next(f for f in result["findings"] if f["cause"] == "underfitting")
    assert [o["name"] for o in finding["fix"]["options"]] == ["wider", "weaker_regularization"]
    assert finding["fix"]["summary"] == "Use a wider model. Or weaken the regularisation (weight decay 0.01 -> 0.001)."


def test_regularisation_beyond_the_seeds_recipe_is_weakened_first_for_a_model_that_cannot_fit(tmp_path):
  rows = _rows(train_loss=(0.9, 0.62), train_acc=(0.7, 0.78), val_acc=(0.71, 0.785))
  finding = _run(tmp_path / "drop", rows, model__dropout_rate=0.9, model__block_dropout_rate=0.5)["findings"][0]
  assert finding["cause"] == "underfitting" and finding["fix"]["options"][0] == {
      "name": "weaker_regularization",
      "overrides": {"config.model.dropout_rate": 0.5, "config.model.block_dropout_rate": 0.25}}
  assert "(dropout before the head 0.9; dropout after each block 0.5)" in finding["explanation"]
  # The seed's own dropout (0.5 before the head) is its recipe, not regularisation to weaken.
  finding = _run(tmp_path / "seed", rows)["findings"][0]
  assert [o["name"] for o in finding["fix"].get("options", [])] == [] and "regularis" not in finding["explanation"]
  assert signal_rules.weaker_regularization(signal_rules.Run(str(tmp_path / "seed"))) == ({}, "", "", False)
  # A decoupled weight decay that makes under a tenth of the early steps (AdamW's usual sizes) is tried last.
  finding = _run(tmp_path / "light", rows, optim__weight_decay=1e-4)["findings"][0]
  assert [o["name"] for o in finding["fix"]["options"]] == ["wider", "weaker_regularization"]
  assert "has weight decay 0.0001, decoupled, under 1% of each early step, whose weakening --verify tries too" in (
      finding["explanation"])


def test_material_regularisation_stays_first_beside_a_run_still_learning(tmp_path):
  rows = _rows(train_loss=(0.9, 0.62), train_acc=(0.7, 0.78), val_acc_curve=[
      0.70, 0.72, 0.74, 0.75, 0.76, 0.77, 0.775, 0.78, 0.79, 0.80])
  finding = _run(tmp_path, rows, num_epochs=10, model__dropout_rate=0.9)["findings"][0]
  assert "still_learning" in finding["evidence"] and finding["severity"] == "high"
  assert [o["name"] for o in finding["fix"]["options"]] == ["weaker_regularization", "longer", "wider"]
  assert finding["fix"]["summary"] == ("Weaken the regularisation (dropout before the head 0.9 -> 0.5); or use a "
                                       "wider model. Or train longer (twice the epochs).")


def test_an_underfitting_resnet_is_offered_its_own_stages_wider_not_a_plain_convnet(tmp_path):
  rows = _rows(train_loss=(0.9, 0.62), train_acc=(0.7, 0.78), val_acc=(0.71, 0.785))
  finding = _run(tmp_path, rows, model__name="ResNet", model__widths=(16, 32, 64))["findings"][0]
  assert finding["cause"] == "underfitting"
  assert finding["fix"]["overrides"] == {"config.model.widths": [32, 64, 128]}  # no model.name: still a ResNet


def test_failed_preflight_in_a_run_that_learned_is_underfitting_not_a_pipeline_bug(tmp_path):
  rundir.write_json(str(tmp_path), rundir.PREFLIGHT_FILE, {"checks": [
      {"name": "overfit_batch", "passed": False, "value": 0.6, "message": "cannot fit one batch"},
      {"name": "majority_class", "passed": True, "value": 0.1}]})
  result = _run(tmp_path, _rows(train_loss=(0.9, 0.45), train_acc=(0.7, 0.84), val_acc=(0.71, 0.842)),
                model__name="ConvNet", model__widths=(1, 2))
  assert _top(result) == "underfitting" and result["findings"][0]["severity"] == "high"
  assert result["findings"][0]["evidence"]["failed_preflight_checks"] == ["overfit_batch"]
  assert "pipeline_bug" not in _causes(result)


def test_lr_plateau_needs_a_constant_schedule_and_a_flat_last_third(tmp_path):
  flat = [0.85, 0.88, 0.89, 0.90, 0.905, 0.908, 0.909, 0.909, 0.910, 0.909]
  assert _top(_run(tmp_path / "a", _rows(val_acc_curve=flat), optim__schedule="constant")) == "lr_plateau"
  assert "lr_plateau" not in _causes(_run(tmp_path / "b", _rows(val_acc_curve=flat)))  # decays already
  rising = [0.85, 0.88, 0.89, 0.90, 0.905, 0.908, 0.909, 0.912, 0.915, 0.918]
  assert "lr_plateau" not in _causes(_run(tmp_path / "c", _rows(val_acc_curve=rising), optim__schedule="constant"))


def test_label_noise_when_validation_beats_training_without_augmentation(tmp_path):
  noisy = _rows(train_acc=(0.5, 0.55), val_acc=(0.8, 0.86), train_loss=(1.5, 1.3))
  result = _run(tmp_path / "a", noisy)
  assert _top(result) == "label_noise" and result["findings"][0]["severity"] == "high"
  assert "underfitting" not in _causes(result)
  assert "label_noise" not in _causes(_run(tmp_path / "b", _rows(train_acc=(0.85, 0.89), val_acc=(0.86, 0.92))))


def _with_train_eval(rows, accuracy):
  for row in rows:
    row["train_eval_accuracy"], row["train_eval_loss"] = accuracy, 0.3
  return rows


def test_label_noise_reads_the_training_accuracy_measured_like_validation(tmp_path):
  # A quick run: the running training accuracy (averaged over an epoch of improving weights, with dropout)
  # lags validation by 7 points, but measured like validation's it does not: clean labels, no finding.
  quick = _with_train_eval(_rows(epochs=3, train_acc=(0.70, 0.80), val_acc=(0.84, 0.87)), 0.875)
  assert "label_noise" not in _causes(_run(tmp_path / "a", quick))
  # Noisy labels show in the measured accuracy even with augmentation on (which hides the running one).
  noisy = _with_train_eval(_rows(train_acc=(0.5, 0.55), val_acc=(0.8, 0.86)), 0.58)
  result = _run(tmp_path / "b", noisy, augment__preset="characters")
  finding = next(f for f in result["findings"] if f["cause"] == "label_noise")
  assert finding["severity"] == "high" and finding["evidence"]["train_accuracy_measured_like_validation"]
  assert finding["evidence"]["train_accuracy"] == pytest.approx(0.58)
  # Borderline: 4.5 points below validation does not fire.
  assert "label_noise" not in _causes(_run(tmp_path / "c", _with_train_eval(_rows(), 0.918 - 0.045)))


def test_label_noise_the_model_memorised_by_the_end_is_read_where_the_gap_was(tmp_path):
  # 3,000 MNIST digits with 30% of labels swapped to the next class (README, The doctor, "On a second
  # dataset"): validation leads the measured training accuracy by 22 points at epoch 2, then the model learns
  # the wrong labels and the two meet; the last evaluation alone says nothing.
  rows = _rows(epochs=10, train_acc=(0.45, 0.76), val_acc=(0.83, 0.84))
  for row, measured in zip(rows, [0.66, 0.62, 0.67, 0.70, 0.72, 0.75, 0.78, 0.80, 0.82, 0.83]):
    row["train_eval_accuracy"], row["train_eval_loss"] = measured, 0.5
  result = _run(tmp_path / "a", rows, audit_dict=_audit(counts=[300] * K, val_counts=[100] * K))
  finding = next(f for f in result["findings"] if f["cause"] == "label_noise")
  assert finding["severity"] == "high" and result["verdict"] == "problems_found"
  evidence = finding["evidence"]
  assert evidence["epoch"] == 2 and evidence["memorised_by_the_end"]
  assert evidence["val_minus_train_accuracy"] == pytest.approx(rows[1]["val_accuracy"] - 0.62, abs=1e-4)
  assert evidence["last_val_minus_train_accuracy"] == pytest.approx(rows[-1]["val_accuracy"] - 0.83, abs=1e-4)
  assert "at epoch 2" in finding["explanation"] and "By the last epoch" in finding["explanation"]
  # Its training loss (0.22 ln K) is measured against the wrong labels: no underfitting is read from it.
  assert rows[-1]["train_eval_loss"] / math.log(K) > 0.16 and "underfitting" not in _causes(result)
  # Validation leads by 4 points at epoch 1 and then falls behind: the peak is read, and it is below 5 points.
  clean = _with_train_eval(_rows(), 0.0)
  for row in clean:
    row["train_eval_accuracy"] = row["val_accuracy"] + (-0.04 if row["epoch"] == 1 else 0.01)
  assert "label_noise" not in _causes(_run(tmp_path / "b", clean))


def test_label_noise_gap_must_pass_the_measurements_own_noise(tmp_path):
  # A 7-point lead at the last evaluation: beyond 5 points, but with 100 validation images (10 a class) the
  # standard error of the difference is 4 points, so 3 of them (12) are required; 6,000 images: 1.1.
  def rows():
    return _with_train_eval(_rows(train_acc=(0.5, 0.55), val_acc=(0.75, 0.80)), 0.73)
  small = _run(tmp_path / "a", rows(), audit_dict=_audit(val_counts=[10] * K))
  assert "label_noise" not in _causes(small)
  finding = next(f for f in _run(tmp_path / "b", rows())["findings"] if f["cause"] == "label_noise")
  assert finding["evidence"]["threshold"] == pytest.approx(0.05)
  assert finding["evidence"]["val_minus_train_accuracy"] == pytest.approx(0.07)
  assert finding["severity"] == "medium"
  # A 15-point lead on 100 validation images passes the 12 points the measurements' noise asks for: a finding,
  # high as any lead beyond 10 points is (the noise gates the finding, the size of the lead its severity).
  big = _with_train_eval(_rows(train_acc=(0.5, 0.55), val_acc=(0.75, 0.80)), 0.65)
  finding = next(f for f in _run(tmp_path / "c", big, audit_dict=_audit(val_counts=[10] * K))["findings"]
                 if f["cause"] == "label_noise")
  assert finding["evidence"]["threshold"] == pytest.approx(0.125, abs=0.005)
  assert finding["severity"] == "high"


def test_harmful_augmentation_from_flips_and_symmetric_confusions(tmp_path):
  confusion = np.eye(K, dtype=int) * 550 + 5
  confusion[5, 5], confusion[5, 7], confusion[7, 7], confusion[7, 5] = 350, 200, 380, 170
  rows = _rows(train_acc=(0.7, 0.8), val_acc=(0.8, 0.86), confusion=confusion.tolist())
  result = _run(tmp_path / "a", rows, augment__vertical_flip=True, augment__rotation_range=180.0)
  assert _top(result) == "harmful_augmentation" and result["findings"][0]["severity"] == "high"
  assert result["findings"][0]["fix"]["overrides"] == {"config.augment.vertical_flip": False,
                                                       "config.augment.rotation_range": 10.0}
  assert "label_noise" not in _causes(result)  # augmentation explains training below validation
  mild = _run(tmp_path / "b", _rows(), augment__preset="characters")
  assert "harmful_augmentation" not in _causes(mild)


def _augment_check(**transforms):
  """augment_check.json with each named transform's (lost, won, p_value, label_destroying)."""
  return {"errors": 60, "accuracy": 0.94, "thresholds": {"p_value": 0.01, "error_increase": 0.2},
          "transforms": {name: {"lost": lost, "won": won, "errors_with_copies": 60 + lost - won,
                                "error_increase": (lost - won) / 60, "p_value": p, "label_destroying": bad,
                                "pairs": [[2, 5, 4], [5, 2, 3]], "lost_by_class": [0] * K, "recognised": 0.4}
                         for name, (lost, won, p, bad) in transforms.items()}}


@pytest.mark.parametrize("fields,expected", [
    ({"zoom_range": 0.1}, {"config.augment.zoom_range": 0.0}),  # at the `characters` strength already: off
    ({"zoom_range": 0.3}, {"config.augment.zoom_range": 0.1}),
    ({"zoom_range": (1.0, 1.1)}, {"config.augment.zoom_range": 0.0}),  # within 0.9-1.1: off, not widened
    ({"zoom_range": (0.5, 1.0)}, {"config.augment.zoom_range": 0.1}),
    ({"rotation_range": 10.0}, {"config.augment.rotation_range": 0.0}),
    ({"rotation_range": 45.0}, {"config.augment.rotation_range": 10.0}),
    ({"width_shift_range": 3.0}, {"config.augment.width_shift_range": 0.0}),  # pixels: off
    ({"shear_range": 5.0}, {"config.augment.shear_range": 0.0}),
    ({"vertical_flip": True}, {"config.augment.vertical_flip": False})])
def test_a_transform_the_check_flags_is_turned_down_or_off(fields, expected):
  from cnn_val import augment  # pylint: disable=import-outside-toplevel
  config = default.get_config().augment
  for field, value in fields.items():
    config[field] = value
  name = {"width_shift_range": "shift"}.get(next(iter(fields)), next(iter(fields)))
  assert augmentation_rules._label_keeping(augment.from_config(config), name) == expected  # pylint: disable=protected-access


def test_harmful_augmentation_from_the_augmentation_check_alone(tmp_path):
  """Flips on digits: the curves look healthy (no confused pairs, training not below validation), and only the
  check on the data says that the flips change the labels."""
  rows = _rows(train_acc=(0.9, 0.97), val_acc=(0.9, 0.945))
  quiet = _run(tmp_path / "a", rows, augment__horizontal_flip=True)
  assert "harmful_augmentation" not in _causes(quiet)  # the curves alone: nothing
  rundir.write_json(str(tmp_path / "a"), rundir.AUGMENT_CHECK_FILE,
                    _augment_check(horizontal_flip=(19, 1, 2e-5, True)))
  result = rules.diagnose(str(tmp_path / "a"))
  finding = result["findings"][0]
  assert finding["cause"] == "harmful_augmentation" and finding["severity"] == "high", finding
  assert finding["fix"]["overrides"] == {"config.augment.horizontal_flip": False}
  assert result["verdict"] == "problems_found"
  assert "19 more images wrong" in finding["explanation"]
  assert "4 c2 nearest a transformed c5" in finding["explanation"]
  assert finding["evidence"]["label_destroying_transforms"]["horizontal_flip"]["lost"] == 19
  # Transforms the check clears, beside one it flags: only the flagged one is turned down (the shifts to 0.1 of
  # the side; the flips and the rotation stay), and a shift, tested at its edge, is medium evidence.
  (tmp_path / "b").mkdir()
  rundir.write_json(str(tmp_path / "b"), rundir.AUGMENT_CHECK_FILE,
                    _augment_check(horizontal_flip=(20, 15, 0.25, False), rotation_range=(9, 8, 0.5, False),
                                   shift=(14, 1, 5e-4, True)))
  result = _run(tmp_path / "b", rows, augment__horizontal_flip=True, augment__rotation_range=25.0,
                augment__width_shift_range=0.3, augment__height_shift_range=0.05)
  finding = next(f for f in result["findings"] if f["cause"] == "harmful_augmentation")
  assert finding["fix"]["overrides"] == {"config.augment.width_shift_range": 0.1,
                                         "config.augment.height_shift_range": 0.0}
  assert list(finding["evidence"]["label_destroying_transforms"]) == ["shift"]
  assert finding["severity"] == "medium" and result["verdict"] == "healthy"
  for rotation, severity in ((45.0, "medium"), (89.0, "medium"), (90.0, "high"), (180.0, "high")):
    workdir = tmp_path / f"rotation{rotation:g}"
    result = _run(workdir, rows, augment__rotation_range=rotation)
    assert "harmful_augmentation" not in _causes(result)  # no check written there: the curves alone say nothing
    rundir.write_json(str(workdir), rundir.AUGMENT_CHECK_FILE, _augment_check(rotation_range=(14, 1, 5e-4, True)))
    finding = rules.diagnose(str(workdir))["findings"][0]
    assert finding["cause"] == "harmful_augmentation" and finding["severity"] == severity, (rotation, finding)
  # A check that clears everything adds nothing.
  (tmp_path / "c").mkdir()
  rundir.write_json(str(tmp_path / "c"), rundir.AUGMENT_CHECK_FILE,
                    _augment_check(horizontal_flip=(20, 15, 0.25, False)))
  assert "harmful_augmentation" not in _causes(_run(tmp_path / "c", rows, augment__horizontal_flip=True))


@pytest.mark.parametrize("ks,fires", [(0.6, True), (0.09, False)])
def test_distribution_shift_from_the_audit(tmp_path, ks, fires):
  result = _run(tmp_path, audit_dict=_audit(drift_ks=ks))
  assert (_top(result) == "distribution_shift") == fires
  if fires:
    assert result["findings"][0]["fix"]["overrides"] == {"config.augment.standardize": True}


def test_class_imbalance_needs_the_ratio_and_a_recall_deficit(tmp_path):
  counts = [108, 5400, 108, 5400, 108, 5400, 108, 5400, 5400, 5400]
  recall = [0.4, 0.97, 0.5, 0.95, 0.45, 0.97, 0.3, 0.97, 0.97, 0.97]
  result = _run(tmp_path / "a", _rows(recall=recall), _audit(counts=counts))
  assert _top(result) == "class_imbalance" and result["findings"][0]["severity"] == "high"
  assert result["findings"][0]["evidence"]["minority_classes"] == [0, 2, 4, 6]
  options = {o["name"]: o["overrides"] for o in result["findings"][0]["fix"]["options"]}
  assert list(options) == ["effective_number", "inverse", "oversample", "logit_adjustment", "deferred"]
  assert options["deferred"] == {"config.imbalance.class_weighting": "inverse",  # the last fifth of 25 epochs
                                 "config.imbalance.deferred_epochs": 20}
  mild = [2000, 5400, 5400, 5400, 5400, 5400, 5400, 5400, 5400, 5400]  # ratio 2.7
  assert "class_imbalance" not in _causes(_run(tmp_path / "b", audit_dict=_audit(counts=mild)))


@pytest.mark.parametrize("dups,fires", [(3000, True), (50, False)])
def test_data_leakage_from_exact_duplicates(tmp_path, dups, fires):
  result = _run(tmp_path, audit_dict=_audit(exact_dups=dups))
  assert (_top(result) == "data_leakage") == fires
  if fires:
    assert result["findings"][0]["fix"]["overrides"] == {"config.data.remove_cross_split_duplicates": True}


@pytest.mark.parametrize("near,severity", [(300, "high"), (170, "medium"), (50, None)])
def test_data_leakage_from_near_duplicates(tmp_path, near, severity):
  audit_dict = _audit()
  audit_dict["duplicates"]["validation"].update(near=near, near_fraction=near / 6000)
  result = _run(tmp_path, audit_dict=audit_dict)
  finding = next((f for f in result["findings"] if f["cause"] == "data_leakage"), None)
  assert (finding and finding["severity"]) == severity
  if finding:
    assert "near copies (0 byte-identical" in finding["explanation"]
    assert finding["evidence"]["near_fraction"] == pytest.approx(near / 6000, abs=1e-5)  # rounded to 5 places


def test_diverged_run_without_metrics(tmp_path):
  rundir.write_json(str(tmp_path), rundir.DIVERGED_FILE, {"step": 12, "lr": 50.0, "last_good_step": None})
  result = _run(tmp_path, rows=[])
  assert _top(result) == "diverged" and result["verdict"] == "problems_found"
  assert result["findings"][0]["fix"]["overrides"]["config.optim.grad_clip_norm"] == 1.0


def test_failed_preflight_is_a_pipeline_bug(tmp_path):
  rundir.write_json(str(tmp_path), rundir.PREFLIGHT_FILE, {"checks": [
      {"name": "inputs_matter", "passed": False, "value": 0.99, "message": "labels do not depend on images"}]})
  result = _run(tmp_path, _rows(train_acc=(0.1, 0.11), val_acc=(0.1, 0.1), train_loss=(2.3, 2.3)))
  assert _top(result) == "pipeline_bug"


def test_thresholds_are_the_documented_constants():
  assert audit.DRIFT_KS == 0.1 and audit.LEAKAGE_FRACTION == 0.01
  assert signal_rules.UPDATE_RATIO_HIGH == 5e-3 and signal_rules.UPDATE_RATIO_LOW == 3e-4


def test_a_dead_network_is_an_lr_problem_not_overfitting(tmp_path):
  """lr 50: ReLUs die, the loss stays far above ln K and validation sits at chance, with noisy val loss."""
  rows = _rows(update_ratio=0.5, train_loss=(19.0, 18.5), train_acc=(0.1, 0.1), val_acc=(0.1, 0.1),
               val_loss_curve=[15, 22, 17, 25, 16, 24, 18, 26, 17, 25])
  result = _run(tmp_path, rows, optim__schedule="constant")
  assert _top(result) == "lr_too_high"
  assert not _causes(result) & {"overfitting", "lr_plateau", "underfitting"}


def test_lr_too_high_from_the_lr_range_test_alone(tmp_path):
  rundir.write_json(str(tmp_path), rundir.LR_FIND_FILE, {"suggestion": 5e-5})  # 1e-3 is 20x that
  rows = _rows()
  for row in rows:
    del row["update_ratio"]  # a run made with config.signals=False
  result = _run(tmp_path, rows)
  assert _top(result) == "lr_too_high" and result["findings"][0]["severity"] == "medium"
  assert "more than 10x the LR range test's suggestion" in result["findings"][0]["explanation"]


@pytest.mark.parametrize("recorded,read", [
    ({"model.name": "ResNet", "batch_size": 32}, False),  # measured for another model: not this run's evidence
    ({"model.name": "SeedCNNDropout", "batch_size": 32, "optim.learning_rate": 0.5}, True),  # the rate: swept
    (None, True)])  # an older version's file, without a recorded config: trusted
def test_an_lr_range_test_of_another_config_is_not_read(tmp_path, recorded, read):
  found = {"suggestion": 5e-5, "lrs": [1e-7, 1e-6], "losses": [2.3, 2.2], "smoothed_loss": [2.3, 2.2]}
  rundir.write_json(str(tmp_path), rundir.LR_FIND_FILE, {**found, **({"config": recorded} if recorded else {})})
  result = _run(tmp_path)
  assert ("lr_too_high" in _causes(result)) == read
  report.write_report(str(tmp_path), result)
  text = open(os.path.join(tmp_path, report.REPORT_FILE)).read()
  assert ("was measured for another config (`model.name`: 'ResNet' there, 'SeedCNNDropout' in this run)"
          in text) == (not read)
  assert ("lr_find.png" in text) == read


@pytest.mark.parametrize("lr", [None, math.inf])
def test_a_diverged_run_whose_rate_became_infinite_is_diagnosed(tmp_path, lr):
  """diverged.json stores lr null (JSON has no Inf) when the schedule overflowed: the rule still reports."""
  rundir.write_json(str(tmp_path), rundir.DIVERGED_FILE, {"step": 40, "lr": lr, "last_good_step": None})
  result = _run(tmp_path, rows=[])
  assert _top(result) == "diverged" and "learning rate unrecorded" in result["findings"][0]["explanation"]


def test_a_learning_rate_fix_lands_in_the_optimizers_sane_range(tmp_path):
  """Adam at 1e4 ends at chance without NaN: 'lower it to 1000' is no fix; Adam's usual 1e-3 is."""
  rows = _rows(update_ratio=0.5, train_loss=(19.0, 18.5), train_acc=(0.1, 0.1), val_acc=(0.1, 0.1))
  for row in rows:
    row["lr"] = 1e4  # as the run logs it (the schedule's rate, which the decay rule reads against the config's)
  result = _run(tmp_path, rows, optim__learning_rate=1e4)
  top = result["findings"][0]
  assert top["cause"] == "lr_too_high" and top["fix"]["overrides"] == {"config.optim.learning_rate": 1e-3}
  assert "adam's usual rate" in top["fix"]["summary"]


def _near_chance_rows(val_final):
  """Learning 1000x too slowly: accuracy creeps up, the loss has stopped falling noticeably (medium lr_too_low)."""
  return _rows(update_ratio=1e-5, train_loss=(2.30, 2.25), train_acc=(0.10, val_final - 0.01),
               val_acc=(0.10, val_final))


def test_a_run_near_the_majority_class_accuracy_is_never_healthy(tmp_path):
  result = _run(tmp_path, _near_chance_rows(0.16), optim__learning_rate=1e-6)  # majority class: 10%
  top = result["findings"][0]
  assert top["cause"] == "lr_too_low" and top["severity"] == "high" and result["verdict"] == "problems_found"
  assert top["evidence"]["raised_to_high"]["majority_class_accuracy"] == pytest.approx(0.1)
  assert "within 9.0 points of always answering the majority class (10.0%)" in top["explanation"]


@pytest.mark.parametrize("val_final,majority_counts,raised", [
    (0.185, [600] * K, True),  # 10% majority: 18.5% is within 10% of the way to 100% (9 points)
    (0.21, [600] * K, False),  # 11 points above it: the rule's own severity (medium)
    (0.31, [1500] + [500] * 9, True)])  # 25% majority: 31% is within 7.5 points
def test_near_chance_is_measured_against_the_majority_class(tmp_path, val_final, majority_counts, raised):
  result = _run(tmp_path, _near_chance_rows(val_final), optim__learning_rate=1e-6,
                audit_dict=_audit(val_counts=majority_counts))
  top = result["findings"][0]
  assert top["cause"] == "lr_too_low" and top["severity"] == ("high" if raised else "medium")
  assert ("raised_to_high" in top["evidence"]) == raised


def test_a_near_chance_run_no_rule_explains_is_underfitting_with_the_experiment_as_its_fix(tmp_path):
  rows = _rows(train_loss=(0.52, 0.26), train_acc=(0.12, 0.12), val_acc=(0.12, 0.12))
  result = _run(tmp_path, rows)
  assert [f["cause"] for f in result["findings"]] == ["underfitting"] and result["verdict"] == "problems_found"
  assert result["findings"][0]["fix"]["overrides"] == {} and "--verify" in result["findings"][0]["fix"]["summary"]


def test_a_class_missing_from_training_is_the_top_finding_not_overfitting(tmp_path):
  audit_dict = _audit(counts=[5400] * 3 + [0] + [5400] * 6)
  audit_dict["splits"]["train"]["missing_classes"] = [3]
  recall = [0.91] * 3 + [0.0] + [0.91] * 6
  rows = _rows(train_acc=(0.81, 0.905), val_acc=(0.79, 0.82), recall=recall)  # 10% of validation unlearnable
  result = _run(tmp_path, rows, audit_dict)
  top = result["findings"][0]
  assert top["cause"] == "missing_class" and top["severity"] == "high" and result["verdict"] == "problems_found"
  assert top["evidence"]["missing_classes"] == [3] and top["evidence"]["validation_share"] == pytest.approx(0.1)
  assert "c3 (600 validation images)" in top["explanation"]
  assert "overfitting" not in _causes(result)  # the 8.5-point gap is the missing class, not memorisation


def test_a_class_absent_from_training_and_validation_is_no_finding(tmp_path):
  audit_dict = _audit(counts=[5400] * 3 + [0] + [5400] * 6, val_counts=[600] * 3 + [0] + [600] * 6)
  audit_dict["splits"]["train"]["missing_classes"] = [3]
  assert "missing_class" not in _causes(_run(tmp_path, None, audit_dict))


@pytest.mark.parametrize("smd,severity", [(2.27, "high"), (0.8, "medium"), (0.45, None)])
def test_a_lighting_shortcut_is_named_by_class_and_statistic(tmp_path, smd, severity):
  audit_dict = _audit(drift_ks=0.06)  # the split-level distributions pass
  audit_dict["class_drift"] = {"validation": {"worst": {"class": 3, "statistic": "contrast", "smd": smd,
                                                        "train_mean": 0.20, "other_mean": 0.33}}}
  result = _run(tmp_path, None, audit_dict)
  finding = next((f for f in result["findings"] if f["cause"] == "distribution_shift"), None)
  assert (finding and finding["severity"]) == severity
  if finding:
    assert finding["evidence"]["kind"] == "shortcut" and finding["evidence"]["class"] == 3
    assert "training images of class c3 differ from its validation images in contrast" in finding["explanation"]
    assert finding["fix"]["overrides"] == {"config.augment.standardize": True}


def test_a_shortcut_that_moves_the_whole_split_is_still_named_by_its_class(tmp_path):
  # One digit class of ten at 0.6x brightness (README, The doctor, "On a second dataset"): the split-level KS
  # passes 0.1 just, while that class differs by 3.9 standard deviations and no other by more than 0.23.
  per_class = {str(c): {"brightness": 0.1, "contrast": -0.2} for c in range(K)}
  per_class["3"] = {"brightness": 1.9, "contrast": 3.93}
  audit_dict = _audit(drift_ks=0.108)
  audit_dict["class_drift"] = {"validation": {"per_class_smd": per_class, "worst": {
      "class": 3, "statistic": "contrast", "smd": 3.93, "train_mean": 0.19, "other_mean": 0.32}}}
  finding = next(f for f in _run(tmp_path / "a", None, audit_dict)["findings"] if f["cause"] == "distribution_shift")
  assert finding["severity"] == "high" and finding["evidence"]["kind"] == "shortcut"
  assert finding["evidence"]["class"] == 3 and finding["evidence"]["split_ks"] == pytest.approx(0.108)
  assert "The split as a whole differs too (KS distance 0.11)" in finding["explanation"]
  # Every class shifted: the split's lighting, named as such (the worst class is not a shortcut).
  audit_dict["class_drift"]["validation"]["per_class_smd"] = {str(c): {"brightness": 2.0, "contrast": 2.5}
                                                              for c in range(K)}
  finding = next(f for f in _run(tmp_path / "b", None, audit_dict)["findings"] if f["cause"] == "distribution_shift")
  assert "kind" not in finding["evidence"] and finding["evidence"]["ks"] == pytest.approx(0.108)
  assert "not lit like training images" in finding["explanation"]


def test_a_colour_shortcut_is_fixed_with_colour_jitter(tmp_path):
  audit_dict = _audit()
  audit_dict["class_drift"] = {"validation": {"worst": {"class": 2, "statistic": "channel_0", "smd": -1.5}}}
  finding = next(f for f in _run(tmp_path, None, audit_dict)["findings"] if f["cause"] == "distribution_shift")
  assert "mean of colour channel 0" in finding["explanation"]
  assert finding["fix"]["overrides"] == {"config.augment.hue": 0.5, "config.augment.saturation": 0.4}
  assert "colour jitter over the whole hue circle" in finding["fix"]["summary"]


def test_a_compound_fault_names_both_causes_and_which_to_fix_first(tmp_path):
  counts = [108, 5400, 108, 5400, 108, 5400, 108, 5400, 5400, 5400]
  recall = [0.4, 0.97, 0.5, 0.95, 0.45, 0.97, 0.3, 0.97, 0.97, 0.97]
  result = _run(tmp_path, _rows(recall=recall), _audit(counts=counts, drift_ks=0.6))
  assert {"class_imbalance", "distribution_shift"} <= _causes(result, "high")
  assert result["fix_first"]["cause"] == result["findings"][0]["cause"]
  assert "a cause measured in the data itself" in result["fix_first"]["why"]
  from cnn_val.doctor import report  # pylint: disable=import-outside-toplevel
  report.write_report(str(tmp_path), result)
  assert f"**Fix first: `{result['fix_first']['cause']}`**" in open(tmp_path / "report.md").read()


def test_augmentation_too_strong_for_the_model_is_underfitting_on_the_measured_training_loss(tmp_path):
  """The seed's example 2 measured: 75.8% on its own (clean) training images, 0.30 ln K, val 75.4%."""
  rows = _rows(train_acc=(0.6, 0.752), val_acc=(0.7, 0.754), train_loss=(1.0, 0.68))
  for row in rows:
    row["train_eval_accuracy"], row["train_eval_loss"] = 0.758, 0.303 * math.log(K)
  result = _run(tmp_path / "a", rows, augment__preset="seed_ex2")
  top = result["findings"][0]
  assert top["cause"] == "underfitting" and top["severity"] == "high"
  assert top["fix"]["overrides"] == {
      "config.augment.rotation_range": 10.0, "config.augment.width_shift_range": 0.1,
      "config.augment.height_shift_range": 0.1, "config.augment.shear_range": 0.0,
      "config.augment.zoom_range": 0.1, "config.augment.horizontal_flip": False}
  assert [o["name"] for o in top["fix"]["options"]] == ["milder_augmentation", "wider"]  # --verify tries both
  # The same augmentation on a model that fits its clean training images (0.09 ln K): no finding.
  for row in rows:
    row["train_eval_accuracy"], row["train_eval_loss"] = 0.93, 0.09 * math.log(K)
  assert "underfitting" not in _causes(_run(tmp_path / "b", rows, augment__preset="seed_ex2"))


def test_a_high_update_ratio_on_a_batchnorm_model_that_fits_is_only_medium(tmp_path):
  rows = _rows(update_ratio=8e-3, train_loss=(0.5, 0.12))  # early mean 6e-3 (fashion_mnist_bn.py: just above)
  result = _run(tmp_path / "a", rows, model__name="ConvNet", model__batchnorm=True)
  finding = next(f for f in result["findings"] if f["cause"] == "lr_too_high")
  assert finding["severity"] == "medium" and result["verdict"] == "healthy"
  assert "with BatchNorm that ratio is weak evidence" in finding["explanation"]
  # The same ratio with a training loss that stays high is high; on a seed model the ratio alone is high.
  stuck = _rows(update_ratio=8e-3, train_loss=(0.9, 0.6), train_acc=(0.7, 0.78), val_acc=(0.7, 0.79))
  high = _run(tmp_path / "b", stuck, model__name="ConvNet", model__batchnorm=True)
  assert next(f for f in high["findings"] if f["cause"] == "lr_too_high")["severity"] == "high"
  seed = _run(tmp_path / "c", rows)
  assert next(f for f in seed["findings"] if f["cause"] == "lr_too_high")["severity"] == "high"
