"""The rule on augmentation that changes what the images mean (`harmful_augmentation`): from the data, where the
augmentation check (`cnn_val/augment_check.py`, augment_check.json) finds a transform that maps one class onto
another, and from the curves (validation confusing classes both ways under strong transforms, or training
accuracy below validation's). The thresholds it shares with the label-noise rule are in generalisation_rules.py.
"""

from __future__ import annotations

from cnn_val import augment as augment_lib
from cnn_val.augment_check import ERROR_INCREASE
from cnn_val.doctor.finding import confidence as _confidence
from cnn_val.doctor.finding import finding as _finding
from cnn_val.doctor.run_view import Run
from cnn_val.doctor.generalisation_rules import NOISE_GAP, PAIR_CONFUSION

# A transform the augmentation check (augment_check.py) finds to change the labels makes a high finding where it
# is a flip or a rotation range of at least this many degrees (it turns shapes over: 6 <-> 9); a smaller
# rotation, shifts, shear or zoom, tested at their largest magnitude, which training draws only at the edge of
# its range, make a medium one (on 1,000 MNIST digits the check flags rotations of +-45 degrees, which cost the
# seed CNN 0.37 points, within the seeds' noise; +-180 cost 7.1 points: README, "Augmentation that changes the
# labels").
ORIENTATION_ROTATION = 90.0


def _label_keeping(a: augment_lib.Augment, name: str) -> dict:
  """Overrides for a transform the augmentation check found to change the labels: a flip or shear off; a
  rotation, shift or zoom down to the `characters` preset's strength (10 degrees, 0.1 of the side, factors
  0.9-1.1) where it is stronger, else off (a pixel shift, whose units differ, off)."""
  mild = augment_lib.PRESETS["characters"]
  if name in ("horizontal_flip", "vertical_flip"):
    return {f"config.augment.{name}": False}
  if name == "shear_range":
    return {"config.augment.shear_range": 0.0}
  if name == "rotation_range":
    return {"config.augment.rotation_range": mild["rotation_range"] if a.rotation_range > mild["rotation_range"]
            + 1e-9 else 0.0}
  if name == "shift":
    out = {}
    for field in ("width_shift_range", "height_shift_range"):
      value = getattr(a, field)
      if value:
        out[f"config.augment.{field}"] = mild[field] if mild[field] + 1e-9 < value < 1 else 0.0
    return out
  lo, hi = a.zoom_range  # zoom_range
  z = mild["zoom_range"]
  return {"config.augment.zoom_range": z if lo < 1 - z - 1e-9 or hi > 1 + z + 1e-9 else 0.0}


def _destroying(run: Run) -> dict:
  """{transform: its test} for the transforms the augmentation check found to change the labels."""
  tested = (run.augment_check or {}).get("transforms", {})
  return {name: t for name, t in tested.items() if t.get("label_destroying")}


def _destroying_text(run: Run, name: str, t: dict) -> str:
  errors = t["errors_with_copies"] - t["lost"] + t["won"]  # the check's errors without the copies
  accuracy = run.augment_check.get("accuracy")
  pairs = ", ".join(f"{n} {run.class_name(a)} nearest a transformed {run.class_name(b)}"
                    for a, b, n in t["pairs"][:3])
  judged = run.augment_check.get("queries")
  return (f"{name}: with a transformed copy of each training image added, a nearest-neighbour classifier on "
          f"the pixels gets {t['lost']} more images wrong and {t['won']} more right ({errors} -> "
          f"{t['errors_with_copies']} errors"
          + (f" of {judged} judged, validation images and training images each left out in turn" if judged else "")
          + f", +{100 * t['error_increase']:.0f}%, p = {t['p_value']:.1g}; of the "
          f"lost: {pairs})" + (f"; a transformed validation image is still recognised as its class "
                               f"{100 * t['recognised']:.0f}% of the time, against {100 * accuracy:.0f}% as it is"
                               if accuracy is not None and t.get("recognised") is not None else ""))


def rule_harmful_augmentation(run: Run):
  if not run.rows or not run.augmentation_on():
    return None
  a = run.augment
  strong = {k: True for k in ("vertical_flip", "horizontal_flip") if getattr(a, k)}
  if a.rotation_range >= 30:
    strong["rotation_range"] = a.rotation_range
  pairs = run.confused_pairs(PAIR_CONFUSION)
  train_below_val = run.val_acc - run.train_acc
  destroying = _destroying(run)
  curves = train_below_val > NOISE_GAP or (strong and pairs)
  if not curves and not destroying:
    return None
  overrides = {}
  # What the curves accuse, checked or not: a rotation the check clears can still turn shapes over (on the
  # orientation fault upside-down sneakers are sandals; the nearest neighbours see a mirrored shoe).
  if curves:
    if a.vertical_flip:
      overrides["config.augment.vertical_flip"] = False
    if a.horizontal_flip and pairs:
      overrides["config.augment.horizontal_flip"] = False
    if a.rotation_range > 10:
      overrides["config.augment.rotation_range"] = 10.0
  for name in destroying:  # measured on the data: each transform that changes the labels
    overrides.update(_label_keeping(a, name))
  pair_text = ", ".join(f"{run.class_name(x)} <-> {run.class_name(y)} ({100 * r:.0f}%)" for x, y, r in pairs[:4])
  evidence = {"strong_transforms": strong, "confused_pairs": [[x, y, r] for x, y, r in pairs],
              "val_minus_train_accuracy": train_below_val}
  confidence = 0.5 + 0.2 * bool(pairs) + 0.2 * bool(strong) + 0.05 * (train_below_val > NOISE_GAP)
  if destroying:
    evidence["label_destroying_transforms"] = {n: {**t, "pairs": t["pairs"][:5]} for n, t in destroying.items()}
    evidence["augment_check_thresholds"] = run.augment_check.get("thresholds")
    threshold = (run.augment_check.get("thresholds") or {}).get("error_increase") or ERROR_INCREASE
    confidence = max(confidence, max(_confidence(t["error_increase"], threshold) for t in destroying.values()))
    observed = ("The augmentation changes what the images mean, measured on the data before training: "
                + "; ".join(_destroying_text(run, n, t) for n, t in destroying.items()) + "."
                + (f" Validation also confuses classes both ways: {pair_text}." if pairs else ""))
  else:
    observed = ("The augmentation changes what the images mean: "
                + (f"{', '.join(strong)} " if strong else "it ")
                + (f"map classes into each other, and validation confuses exactly such pairs both ways: {pair_text}."
                   if pairs else f"training accuracy ({run.train_acc:.3f}) stays {100 * train_below_val:.1f} "
                                 f"points below validation accuracy, so the augmented images are harder than the "
                                 f"real ones."))
  decisive = [n for n in destroying if n in ("horizontal_flip", "vertical_flip")
              or (n == "rotation_range" and a.rotation_range >= ORIENTATION_ROTATION)]
  return _finding(
      "harmful_augmentation", "high" if decisive or (pairs and strong) else "medium",
      round(min(confidence, 0.95), 3), evidence, observed,
      (f"Turn off, or down, the transforms that change the labels ({', '.join(destroying)})"
       + ("; and narrow the rest to transforms that keep them (no flips, small rotations)." if curves else ".")
       if destroying else "Narrow the augmentation to transforms that keep the label (no flips, small rotations)."),
      overrides or {"config.augment.preset": "none"})
