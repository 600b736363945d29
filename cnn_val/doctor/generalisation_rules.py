"""The rules that read whether the model generalises: overfitting (training accuracy above validation's, the
validation loss rising from its minimum) and label_noise (validation above the training examples' own labels,
with cleanlab's listing of the likely-wrong ones where the run has it). Each reads a `Run` and returns a finding
or None; `noise_peak` is the label-noise gate the underfitting rule (signal_rules.py) respects too, and
augmentation_rules.py shares NOISE_GAP and PAIR_CONFUSION. The thresholds are the named constants below (README,
"Diagnosis")."""

from __future__ import annotations

import math
import os

import numpy as np

from cnn_val import rundir
from cnn_val.doctor.data_rules import missing_share
from cnn_val.doctor.finding import ROBUST_GCE_Q, WEIGHT_DECAY
from cnn_val.doctor.finding import confidence as _confidence
from cnn_val.doctor.finding import finding as _finding
from cnn_val.doctor.label_check import LABEL_ISSUES_FILE, NOISE_TRANSITION_FILE
from cnn_val.doctor.run_view import Run

OVERFIT_VAL_LOSS_RISE = 0.10  # median validation loss of the last third above its minimum by this fraction
OVERFIT_GAP = 0.04  # training accuracy above validation accuracy by this much
NOISE_GAP = 0.05  # validation accuracy above training accuracy by this much (without augmentation)
# ... and by this many standard errors of the difference of the two measured accuracies, where the sizes of
# the training subset and of validation are known (1,000 validation images and the 2,000-image training
# subset: 4.7 points, validation at 85% and training at 60%; 100 images: 12 points at 80% and 73%). Read at
# the evaluation where the gap is largest: a model that later memorises its wrong labels closes it (3,000
# MNIST digits with 30% of labels swapped to the next class: 22-23 points at epochs 2-4, 0-2 points at epoch
# 30; 101 clean run directories on both datasets: at most 3.4 points at any epoch). The maximum over a run's
# ~10-30 evaluations is more often large by chance than one evaluation is; the 5-point floor, not the 3
# errors, binds on every run measured (validation of 1,000 images or more).
NOISE_Z = 3.0
PAIR_CONFUSION = 0.15  # classes a and b mistaken for each other, each way, at this rate


def _overfit_options(run: Run) -> list[tuple[str, dict]]:
  """The standard regularisers, each alone: more dropout, an augmentation preset when none is on, decoupled
  weight decay when none is on. Which one a dataset rewards is an experiment's question (on 10,000
  Fashion-MNIST examples the three together cost 0.5 points, the augmentation alone 1.7, while the dropout
  model alone gained 1.1), so they are options, tried one by one, not a bundle."""
  options = []
  model, rate = run.get("model.name"), run.get("model.dropout_rate", 0.0)
  if model == "SeedCNN":
    options.append(("dropout", {"config.model.name": "SeedCNNDropout"}))
  elif model in ("SeedCNNDropout", "ConvNet") and rate < 0.6:
    options.append(("dropout", {"config.model.dropout_rate": round(min(0.7, rate + 0.2), 2)}))
  if run.get("optim.weight_decay", 0.0) == 0.0:
    options.append(("weight_decay", {"config.optim.weight_decay": WEIGHT_DECAY,
                                     "config.optim.weight_decay_mode": "decoupled"}))
  if not run.augmentation_on():  # small shifts, zooms and rotations keep any label; flips only for colour
    channels = len((run.audit or {}).get("splits", {}).get("train", {}).get("channel_means", [0]))
    options.append(("augment", {"config.augment.preset": "characters" if channels == 1 else "natural"}))
  return options


def rule_overfitting(run: Run):
  if not run.learned() or len(run.rows) < 3:
    return None
  min_val_loss = min(run.val_losses)
  late_val_loss = float(np.median([r["val_loss"] for r in run.late]))  # robust to one noisy evaluation
  measured_rise = (late_val_loss - min_val_loss) / max(min_val_loss, 1e-12)
  # Still falling at the end: a late median above the minimum is the fall itself (a run of 50 steps read 25% above
  # the minimum its last evaluation set), not a rise.
  still_falling = run.val_losses[-1] <= min_val_loss
  rise = 0.0 if still_falling else measured_rise
  gap = run.train_acc - run.val_acc / (1 - missing_share(run))  # on the classes training holds
  if rise <= OVERFIT_VAL_LOSS_RISE and gap <= OVERFIT_GAP:
    return None
  confidence = max(_confidence(rise, OVERFIT_VAL_LOSS_RISE) if rise > OVERFIT_VAL_LOSS_RISE else 0,
                   _confidence(gap, OVERFIT_GAP) if gap > OVERFIT_GAP else 0)
  both = (rise > OVERFIT_VAL_LOSS_RISE and gap > OVERFIT_GAP) or gap > 2 * OVERFIT_GAP
  n_train = run.split_count("train")
  loss_said = ""
  if rise > OVERFIT_VAL_LOSS_RISE:
    loss_said = (f"the validation loss ended {100 * rise:.0f}% above its minimum (epoch "
                 f"{run.val_losses.index(min_val_loss) + 1} of {run.last['epoch']})")
  if gap > OVERFIT_GAP:
    said = (f"The model memorises its training set: training accuracy {run.train_acc:.3f} against validation "
            f"{run.val_acc:.3f}" + (f", and {loss_said}" if loss_said else ""))
  else:
    said = (f"The model grows confident on the validation images it gets wrong (training accuracy "
            f"{run.train_acc:.3f}, validation {run.val_acc:.3f}): {loss_said}")
  return _finding(
      "overfitting", "high" if both else "medium", confidence,
      {"val_loss_rise_from_min": measured_rise, "val_loss_still_falling": still_falling,
       "val_loss_rise_threshold": OVERFIT_VAL_LOSS_RISE,
       "train_minus_val_accuracy": gap, "gap_threshold": OVERFIT_GAP, "best_epoch": run.best["epoch"],
       "epochs": run.last["epoch"], "train_examples": n_train},
      said + (f", from only {n_train} training examples" if n_train and n_train < 5000 else "") + ".",
      "Regularise: more dropout, data augmentation or weight decay (and keep the best checkpoint); "
      "`--verify` tries each alone.",
      options=_overfit_options(run))


def _gap_threshold(run: Run, row: dict) -> float:
  """NOISE_GAP, or NOISE_Z standard errors of (validation - training subset) accuracy at `row` if larger."""
  n_val, n_train = run.split_count("validation"), run.split_count("train")
  subset = min(n_train, run.get("train_eval_examples") or n_train) if n_train else None
  if not n_val or not subset:
    return NOISE_GAP
  p_val, p_train = row["val_accuracy"], row["train_eval_accuracy"]
  se = math.sqrt(p_val * (1 - p_val) / n_val + p_train * (1 - p_train) / subset)
  return max(NOISE_GAP, NOISE_Z * se)


def noise_peak(run: Run) -> tuple[dict, float]:
  """(the evaluation where validation leads the training accuracy measured like it most, the lead's threshold
  there); the run must log `train_eval_accuracy`."""
  rows = [r for r in run.rows if r.get("train_eval_accuracy") is not None]
  at = max(rows, key=lambda r: (r["val_accuracy"] - r["train_eval_accuracy"], r["epoch"]))
  return at, _gap_threshold(run, at)


def rule_label_noise(run: Run):
  """Validation beats the training examples' own labels. Read on the training accuracy measured like
  validation's (`train_eval_accuracy`: eval mode, no augmentation, that evaluation's weights) when the run
  logged it, at the evaluation where validation leads it most (a model that goes on to memorise the wrong
  labels closes the gap by the end); otherwise on the last running training accuracy, which dropout,
  augmentation and an epoch of improving weights bias low, so only without augmentation."""
  if not run.rows:
    return None
  measured = run.last.get("train_eval_accuracy")
  if measured is None and run.augmentation_on():
    return None
  threshold, at = NOISE_GAP, run.last
  if measured is not None:
    at, threshold = noise_peak(run)
  train_acc = run.train_acc if measured is None else at["train_eval_accuracy"]
  val_acc = at["val_accuracy"]
  gap = val_acc - train_acc
  if gap <= threshold:
    return None
  noise = 1.0 - train_acc / max(val_acc, 1e-12)
  how = ("measured like validation's on a fixed training subset" if measured is not None else
         "averaged over the epoch, without augmentation")
  earlier = at["step"] != run.last["step"]
  last_gap = run.val_acc - measured if measured is not None else gap
  memorised = earlier and last_gap <= _gap_threshold(run, run.last)
  when = f" at epoch {at['epoch']}" if earlier else ""
  issues = run.label_issues
  listed = bool(issues and not issues.get("skipped") and issues["flagged"])
  source = issues.get("predictions_from", {}) if listed else {}
  from_best = source.get("checkpoint") == "best" and source.get("step") != run.last["step"]
  later = ""
  if memorised:
    listing = ("; the listing below reads the best checkpoint's outputs, which had memorised fewer, and still "
               "undercounts it." if from_best else ", and a listing from the final model's outputs undercounts it.")
    later = (f" By the last epoch the model had learned many of them and the lead had closed to "
             f"{100 * last_gap:.1f} points (training {measured:.3f}, validation {run.val_acc:.3f}; best validation "
             f"{run.best['val_accuracy']:.3f} at epoch {run.best['epoch']}): the last evaluation alone hides the "
             f"noise{listing}")
  which = ""
  if listed:
    top = issues["pairs"][0]
    which = (f" Confident learning (cleanlab) on the outputs of {issues.get('weights', 'the final weights')} "
             f"for {issues['examples']:,} training examples flags "
             f"{issues['flagged']:,} ({100 * issues['fraction']:.1f}%) as probably mislabelled, most often "
             f"labelled {run.class_name(top['given'])} where the model sees {run.class_name(top['suggested'])} "
             f"({top['count']}, {100 * top['share_of_given']:.0f}% of that label's examples); the report lists "
             f"them by class pair and index in the training split.")
  return _finding(
      # Significance gates the finding (threshold); the size of the lead sets its severity.
      "label_noise", "high" if gap > max(2 * NOISE_GAP, threshold) else "medium", _confidence(gap, threshold),
      {"val_minus_train_accuracy": gap, "threshold": threshold, "epoch": at["epoch"], "train_accuracy": train_acc,
       "train_accuracy_measured_like_validation": measured is not None,
       "val_accuracy": val_acc, "estimated_noisy_fraction": noise, "last_val_minus_train_accuracy": last_gap,
       "memorised_by_the_end": memorised, "dropout_rate": run.get("model.dropout_rate"),
       **({"likely_wrong_labels": issues} if listed else {})},
      f"The model scores {100 * gap:.1f} points better on validation ({val_acc:.3f}) than on the very "
      f"examples it trains on ({train_acc:.3f}, {how}){when}: about {100 * noise:.0f}% of the "
      f"training labels disagree with what the model learns from the rest, so they are probably wrong."
      + later + which,
      ("Train on every label with the loss corrected for the noise confident learning estimates "
       "(noise_transition.json, forward correction), or without the likely-wrong labels (the flagged "
       "examples, label_issues.json; the report lists them), or with them relabelled as the model sees them, or "
       f"on the generalized cross-entropy (config.gce_q={ROBUST_GCE_Q}: the labels the model finds "
       "implausible pull less); `--verify` tries all four (forward correction won on Fashion-MNIST's two label "
       "faults and on pair noise on digits, relabelling on 40% uniform noise on 3,000 digits, the generalized "
       "cross-entropy on 1,797: README), then the best of the first three on the generalized cross-entropy, which "
       "gains where the run memorises its wrong labels. Then relabel them by hand: confident learning's remedy."
       if listed else
       "Clean the training labels (relabel the examples the model most confidently disagrees with); meanwhile "
       f"train on the generalized cross-entropy (config.gce_q={ROBUST_GCE_Q}), on which the labels the "
       "model finds implausible, most of the wrong ones, pull less, and keep the best checkpoint."),
      None if listed else {"config.gce_q": ROBUST_GCE_Q},
      options=[(name, {f"config.data.{field}": rundir.absolute(os.path.join(run.workdir, file))})
               for name, field, file in (("forward", "noise_transition", NOISE_TRANSITION_FILE),
                                         ("exclude", "exclude_train_examples", LABEL_ISSUES_FILE),
                                         ("relabel", "relabel_train_examples", LABEL_ISSUES_FILE))]
      + [("robust", {"config.gce_q": ROBUST_GCE_Q})] if listed else None)
