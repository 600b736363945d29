"""The doctor's rules that read the data itself (audit.json): is the validation data like the training data?
A class missing from training, leakage of validation images into training (exact or near copies), a lighting
shift of the whole split or a shortcut in one class, a class imbalance the model bets on.

Thresholds are the named constants below (also audit.DRIFT_KS and audit.LEAKAGE_FRACTION), measured on the
fault scenarios and clean Fashion-MNIST (README, "The doctor").
"""

from __future__ import annotations

import numpy as np

from cnn_val import audit as audit_lib
from cnn_val.doctor.finding import confidence as _confidence
from cnn_val.doctor.finding import finding as _finding
from cnn_val.doctor.run_view import Run

IMBALANCE_RATIO = 3.0  # largest / smallest training class
RECALL_DEFICIT = 0.10  # minority classes' mean validation recall below the others' by this much
# Per class, |standardised mean difference| of brightness, contrast or a channel mean between the class's
# training and validation images above this: a shortcut. Clean Fashion-MNIST: at most 0.09 over its 10 classes;
# one class's training images at 0.8x brightness: 1.08, at 0.6x: 2.27 (split-level KS then only 0.04-0.08).
CLASS_DRIFT_SMD = 0.5
LEAKAGE_HIGH = 0.03  # validation share with a copy in training (exact or near) above which leakage is high
MISSING_CLASS_SHARE = 0.01  # classes without training images holding this share of validation: high
# The least share of a training label's images the noise estimate must give to its own class for the shortcut
# rule to discount the difference it explains: 40% uniform noise leaves 0.6, 30% pair noise 0.7, while a model
# that predicts one class for everything makes cleanlab say most labels come from that class.
LABEL_SOURCE_OWN = 0.5


def _class_drift(run: Run) -> dict:
  return ((run.audit or {}).get("class_drift") or {}).get("validation") or {}


def _few_classes_shifted(run: Run) -> bool:
  """At most half of the classes measured differ between their training and validation images by more than
  CLASS_DRIFT_SMD in any statistic: a split-level shift is then those classes' doing, not the whole split's
  lighting (one digit class of ten at 0.6x brightness moves MNIST's split-level KS to 0.10-0.11, while that
  class differs by 3.9 standard deviations and no other by more than 0.23)."""
  per_class = _class_drift(run).get("per_class_smd") or {}
  shifted = sum(any(v is not None and abs(v) > CLASS_DRIFT_SMD for v in (stats or {}).values())
                for stats in per_class.values())
  return bool(per_class) and 2 * shifted <= len(per_class)


def _noise_residuals(run: Run, drift: dict, candidates: list) -> dict | None:
  """Each candidate's (class, statistic, SMD) difference left once the label noise confident learning estimates
  is accounted for. Under that noise the training images labelled c are a mix of the true classes i, with
  weights P(true class i | given label c) (the run's `label_sources`), each as the other split shows its
  images; the residual is that mix's mean less the class's training mean, in the candidate's pooled standard
  deviations (the SMD's sign: clean labels, the identity, leave the SMD itself). Wrong labels move a class's
  training mean towards the classes they come from: 40% uniform noise on Fashion-MNIST moves Sandal's brightness
  by 0.65 standard deviations, and the mix leaves 0.02 (README, "A shortcut, or wrong labels?"). None without
  the class means (an audit from before they were written) or the training predictions."""
  means = drift.get("per_class_mean") or {}
  if not means.get("train") or not means.get("other"):
    return None
  sources = run.label_sources
  if sources is None:
    return None
  known = [i for i in range(len(sources)) if str(i) in means["other"]]  # classes the other split shows
  out = {}
  for c, stat, smd in candidates:
    train_mean, other_mean = means["train"][c][stat], means["other"][c][stat]
    weights = sources[int(c), known] if int(c) < len(sources) else np.zeros(len(known))
    if (smd == 0 or other_mean == train_mean or weights.sum() <= 0
        or sources[int(c), int(c)] < LABEL_SOURCE_OWN):  # an estimate that most of a label is wrong is no evidence
      out[(c, stat)] = smd
      continue
    mix = float(np.dot(weights, [means["other"][str(i)][stat] for i in known]) / weights.sum())
    out[(c, stat)] = (mix - train_mean) / ((other_mean - train_mean) / smd)
  return out


def _shortcut(run: Run, split_ks: float | None = None):
  """A class whose training images differ from its validation images (lighting, contrast, colour) by more
  than CLASS_DRIFT_SMD pooled standard deviations: the split-level distributions may still match (or move
  with it: `split_ks`, when the split-level KS passed its threshold because of this class). Where the run's
  training predictions estimate the label noise, a difference that the noise explains (`_noise_residuals`
  within CLASS_DRIFT_SMD) is not a shortcut: the largest one left is."""
  drift = _class_drift(run)
  worst = drift.get("worst") or {}
  if worst.get("class") is None or abs(worst["smd"]) <= CLASS_DRIFT_SMD:
    return None
  candidates = [(c, stat, v) for c, stats in (drift.get("per_class_smd") or {}).items()
                for stat, v in (stats or {}).items() if v is not None and abs(v) > CLASS_DRIFT_SMD]
  residuals = _noise_residuals(run, drift, candidates)
  residual = None
  if residuals is not None:
    left = [(abs(residuals[(c, stat)]), c, stat, v) for c, stat, v in candidates
            if abs(residuals[(c, stat)]) > CLASS_DRIFT_SMD]
    if not left:
      return None  # every difference is what the wrong labels mix in
    _, c, stat, smd = max(left)
    residual = residuals[(c, stat)]
    worst = {"class": int(c), "statistic": stat, "smd": smd,
             "train_mean": drift["per_class_mean"]["train"][c][stat],
             "other_mean": drift["per_class_mean"]["other"][c][stat]}
  c, stat, smd = worst["class"], worst["statistic"], worst["smd"]
  size = abs(smd) if residual is None else abs(residual)  # what is left of it once the wrong labels are
  colour = stat.startswith(("channel_", "chroma_"))
  what = {"brightness": "brightness", "contrast": "contrast"}.get(stat) or (
      f"mean of colour channel {stat[8:]}" if stat.startswith("channel_") else
      f"share of colour channel {stat[7:]} (its mean over the sum of the channel means: the colour, not the lighting)")
  return _finding(
      "distribution_shift", "high" if size > 2 * CLASS_DRIFT_SMD else "medium", _confidence(size, CLASS_DRIFT_SMD),
      {"kind": "shortcut", "class": c, "statistic": stat, "smd": smd, "threshold": CLASS_DRIFT_SMD,
       "train_mean": worst.get("train_mean"), "val_mean": worst.get("other_mean"),
       **({"smd_after_label_noise": round(residual, 4)} if residual is not None else {}),
       **({"split_ks": split_ks} if split_ks is not None else {})},
      f"A shortcut: the training images of class {run.class_name(c)} differ from its validation images in "
      f"{what} by {abs(smd):.1f} standard deviations (train mean {worst.get('train_mean', 0):.3f}, validation "
      f"{worst.get('other_mean', 0):.3f}; clean Fashion-MNIST classes: below 0.1), while other classes do "
      f"not"
      + (f" ({abs(residual):.1f} once the label noise estimated from the training predictions is accounted for)"
         if residual is not None and round(abs(residual), 1) != round(abs(smd), 1) else "")
      + f". A model can learn the {'colour' if colour else 'lighting'} as the class's sign, and validation "
      f"does not carry it."
      + (f" The split as a whole differs too (KS distance {split_ks:.2f}), because this class's images do."
         if split_ks is not None else ""),
      ("Make the model independent of the colour: colour jitter over the whole hue circle (a turn of "
       "+-0.1 leaves a class that is one hue in training near that hue, so the cue survives) and of the "
       "saturation, or train on grayscale (for an image folder: config.data.channels=1), or collect "
       "images of the class in other colours." if colour else
       "Make the model independent of lighting: per-image standardisation (or brightness/contrast "
       "augmentation wide enough to cover the difference)."),
      {"config.augment.hue": 0.5, "config.augment.saturation": 0.4} if colour else
      {"config.augment.standardize": True})


def rule_distribution_shift(run: Run):
  drift = ((run.audit or {}).get("drift") or {}).get("validation")
  if not drift:
    return None
  worst = max(drift, key=lambda s: drift[s]["ks"])
  ks = drift[worst]["ks"]
  if ks <= audit_lib.DRIFT_KS:
    return _shortcut(run)
  if _few_classes_shifted(run):  # the split moved because a few classes did: name the class, and its fix
    shortcut = _shortcut(run, split_ks=ks)
    if shortcut:
      return shortcut
  splits = run.audit["splits"]
  b_train, b_val = splits["train"]["brightness"]["mean"], splits["validation"]["brightness"]["mean"]
  c_train, c_val = splits["train"]["contrast"]["mean"], splits["validation"]["contrast"]["mean"]
  return _finding(
      "distribution_shift", "high" if ks > 3 * audit_lib.DRIFT_KS else "medium",
      _confidence(ks, audit_lib.DRIFT_KS),
      {"worst_statistic": worst, "ks": ks, "threshold": audit_lib.DRIFT_KS,
       **{f"{s}_ks": drift[s]["ks"] for s in drift}, "train_brightness": b_train, "val_brightness": b_val,
       "train_contrast": c_train, "val_contrast": c_val},
      f"Validation images are not lit like training images: mean brightness {b_val:.3f} against "
      f"{b_train:.3f} in training, RMS contrast {c_val:.3f} against {c_train:.3f} (KS distance of the "
      f"{worst} distributions {ks:.2f}; same-distribution splits measure below {audit_lib.DRIFT_KS}). The model "
      f"never saw validation's lighting.",
      "Make the model independent of global lighting: per-image standardisation (or lighting augmentation "
      f"covering the shift: config.augment.brightness={min(0.5, round(1.5 * abs(b_val - b_train), 2))}, "
      f"config.augment.contrast={min(0.9, round(1.5 * abs(c_val / max(c_train, 1e-6) - 1), 2))}).",
      {"config.augment.standardize": True})


def rule_class_imbalance(run: Run):
  splits = (run.audit or {}).get("splits", {})
  if "train" not in splits or not run.rows:
    return None
  counts = np.asarray(splits["train"]["class_counts"], float)
  ratio = splits["train"].get("imbalance_ratio") or 1.0
  if ratio <= IMBALANCE_RATIO:
    return None
  recall = np.array([np.nan if r is None else r for r in run.last["val_per_class_recall"]], float)
  minority = counts < counts.max() / IMBALANCE_RATIO
  deficit = (float(np.nanmean(recall[~minority]) - np.nanmean(recall[minority]))
             if minority.any() and (~minority).any() else 0.0)
  val_ratio = splits.get("validation", {}).get("imbalance_ratio") or 1.0
  severity = "high" if deficit > RECALL_DEFICIT else ("medium" if deficit > RECALL_DEFICIT / 2 else "low")
  minority_names = [run.class_name(i) for i in np.flatnonzero(minority)]
  return _finding(
      "class_imbalance", severity,
      round(0.5 * _confidence(ratio, IMBALANCE_RATIO) + 0.5 * _confidence(max(deficit, 1e-6), RECALL_DEFICIT), 3),
      {"train_imbalance_ratio": ratio, "threshold": IMBALANCE_RATIO, "val_imbalance_ratio": val_ratio,
       "minority_classes": np.flatnonzero(minority).tolist(), "minority_recall_deficit": deficit,
       "balanced_accuracy": run.last.get("val_balanced_accuracy"), "accuracy": run.val_acc},
      f"The training set holds {ratio:.0f}x more examples of its largest class than of its smallest "
      f"(validation: {val_ratio:.1f}x), and the minority classes ({', '.join(minority_names[:6])}) are "
      f"recalled {100 * deficit:.1f} points less often than the rest: the model learned to bet on the "
      f"majority.",
      "Weight the loss by class (effective number of samples, or inverse frequency, from the start or only "
      "for the last fifth of training: deferred re-weighting), resample each epoch to balance it, or adjust "
      "the logits in the loss by the class prior; `--verify` tries each.",
      options=[("effective_number", {"config.imbalance.class_weighting": "effective_number"}),
               ("inverse", {"config.imbalance.class_weighting": "inverse"}),
               ("oversample", {"config.imbalance.resampling": "oversample"}),
               ("logit_adjustment", {"config.imbalance.logit_adjustment": 1.0})] + _deferred_option(run))


def _deferred_option(run: Run) -> list:
  """Deferred re-weighting (Cao et al., NeurIPS 2019): inverse-frequency weights for the last fifth of the
  run's epochs only (their 160 of 200), the features learnt unweighted first; none for a run of one epoch."""
  epochs = int(run.get("num_epochs") or 0)
  if epochs < 2:
    return []
  return [("deferred", {"config.imbalance.class_weighting": "inverse",
                        "config.imbalance.deferred_epochs": max(1, min(epochs - 1, round(0.8 * epochs)))})]


def _missing_classes(run: Run) -> tuple[list[int], list[int]]:
  """(classes with validation images but no training image, the validation class counts), from the audit."""
  splits = (run.audit or {}).get("splits", {})
  val_counts = (splits.get("validation") or {}).get("class_counts") or []
  missing = (splits.get("train") or {}).get("missing_classes", [])
  return [c for c in missing if c < len(val_counts) and val_counts[c]], val_counts


def missing_share(run: Run) -> float:
  """The share of validation in classes that have no training image (0 for most runs)."""
  missing, val_counts = _missing_classes(run)
  return min(0.99, sum(val_counts[c] for c in missing) / max(sum(val_counts), 1))


def rule_missing_class(run: Run):
  """Classes with validation images but no training image: the model can never predict them."""
  missing, val_counts = _missing_classes(run)
  if not missing:
    return None
  share = missing_share(run)
  names = ", ".join(f"{run.class_name(c)} ({val_counts[c]} validation images)" for c in missing)
  return _finding(
      "missing_class", "high" if share >= MISSING_CLASS_SHARE else "medium", 0.95,
      {"missing_classes": missing, "validation_share": share,
       "validation_counts": [val_counts[c] for c in missing], "val_accuracy": run.val_acc if run.rows else None},
      f"The training set holds no image of {names}: the model cannot predict what it never saw, so "
      f"{100 * share:.1f}% of validation is lost whatever the training does, and the train/validation gap it "
      f"leaves is not overfitting.",
      "Add training images of the missing class(es), or remove them from validation and test (and from the "
      "label set) if the model is not meant to know them.")


def rule_data_leakage(run: Run):
  """Validation images that training also holds: byte-identical copies, or near duplicates (a shifted, lightly
  noised copy; audit.NEAR_RMS). Clean Fashion-MNIST has 0.07% natural near duplicates; the rule fires above
  audit.LEAKAGE_FRACTION (1%), on the larger of the two counts (a near duplicate includes an exact one)."""
  dups = ((run.audit or {}).get("duplicates") or {}).get("validation")
  if not dups:
    return None
  exact, near = dups["exact_fraction"], dups.get("near_fraction", 0.0)
  leaked = max(exact, near)
  if leaked <= audit_lib.LEAKAGE_FRACTION:
    return None
  count = max(dups["exact"], dups.get("near", 0))
  test_gap = (run.last["val_accuracy"] - run.last["test_accuracy"]
              if run.rows and "test_accuracy" in run.last else None)
  kind = ("byte-identical copies" if dups["exact"] >= dups.get("near", 0) else
          f"near copies ({dups['exact']} byte-identical; the rest differ by a shift of a pixel or light noise)")
  return _finding(
      "data_leakage", "high" if leaked > LEAKAGE_HIGH else "medium",
      _confidence(leaked, audit_lib.LEAKAGE_FRACTION),
      {"val_exact_duplicates_in_train": dups["exact"], "fraction": exact, "val_near_duplicates_in_train":
       dups.get("near"), "near_fraction": near, "threshold": audit_lib.LEAKAGE_FRACTION,
       "val_minus_test_accuracy": test_gap},
      f"{count} validation images ({100 * leaked:.1f}%) are also in the training set as {kind}, "
      f"so validation accuracy measures memory, not generalisation"
      + (f" (it exceeds test accuracy by {100 * test_gap:.1f} points)" if test_gap is not None else "") + ".",
      "Remove the cross-split duplicates, exact and near, from training.",
      {"config.data.remove_cross_split_duplicates": True})

