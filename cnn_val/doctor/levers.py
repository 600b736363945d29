"""The doctor's lever menu: the seed's levers, each one change to the run's own model and recipe, with the
cause each tests (`menu_arms`); the second stage on what was confirmed (`follow_up_arms`: the wider model
widened again, deeper blocks deepened again, a longer training still learning lengthened again, a weaker
regularisation weakened again, a confirmed regularisation deepened (with and without BatchNorm), the confirmed
changes together); which arms the run's images can build (`unbuildable`); and a confirmed lever as a finding
(`lever_finding`). experiments.verify trains and judges them."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Callable, NamedTuple

from absl import logging

from cnn_val import ablate, rundir
from cnn_val.doctor.finding import ROBUST_GCE_Q, WEIGHT_DECAY
from cnn_val.doctor.regularisation import BLOCK_MODELS, weaker_again
from cnn_val.doctor.run_view import Run

MENU_WEIGHT_DECAY = WEIGHT_DECAY  # the lever menu's, the overfitting fix's: finding.WEIGHT_DECAY
MENU_BLOCK_DROPOUT = 0.2
LR_TEST_TIMEOUT_S = 900  # the LR range test the menu runs where a run has none (ensure_lr_range_test)

_AUGMENT_OFF = {"horizontal_flip": False, "vertical_flip": False, "rotation_range": 0.0, "width_shift_range": 0.0,
                "height_shift_range": 0.0, "shear_range": 0.0, "zoom_range": 0.0, "brightness": 0.0,
                "contrast": 0.0, "gamma": 0.0, "hue": 0.0, "saturation": 0.0}
# The names follow_up_arms gives.
FOLLOW_UP_LEVERS = ("wider_x2", "deeper_blocks_x2", "deeper_blocks_bn", "longer_x2", "weaker_x2",
                    "regularised_deeper", "regularised_deeper_bn", "robust_loss", "combined")
# Every name menu_arms can give.
LEVERS = ("wider", "deeper", "deeper_blocks", "batchnorm", "block_dropout", "weight_decay", "cosine",
          "lr_range_test", "no_early_stopping", "augment", *(f"no_{field}" for field in _AUGMENT_OFF),
          *FOLLOW_UP_LEVERS)


def menu_arms(run: Run) -> list[tuple[ablate.Arm, str]]:
  """The seed's levers, each one change to the run's own model and recipe: (arm, the cause it tests)."""
  get, arms = run.get, []
  model = get("model.name")
  # A second (third, ...) conv in each block before its pool, as VGG deepens: the map keeps its resolution.
  deeper_blocks = ablate.Arm("deeper_blocks", {"model.convs_per_block": int(get("model.convs_per_block", 1)) + 1})
  if model in ("SeedCNN", "SeedCNNDropout") and get("model.width_multiplier") is not None:
    arms.append((ablate.Arm("wider", {"model.width_multiplier": 2 * float(get("model.width_multiplier"))}),
                 "underfitting"))
    arms.append((ablate.Arm("deeper", {"model.extra_blocks": int(get("model.extra_blocks")) + 1}),
                 "underfitting"))
    arms.append((deeper_blocks, "underfitting"))
  elif model in ("ConvNet", "ResNet"):
    widths = list(get("model.widths") or [])
    arms.append((ablate.Arm("wider", {"model.widths": [2 * int(w) for w in widths]}), "underfitting"))
    if model == "ConvNet":
      arms.append((ablate.Arm("deeper", {"model.widths": widths + [2 * int(widths[-1])]}), "underfitting"))
      arms.append((deeper_blocks, "underfitting"))
    else:
      arms.append((ablate.Arm("deeper", {"model.depth": int(get("model.depth")) + 6}), "underfitting"))
  if model in BLOCK_MODELS and not get("model.batchnorm"):
    arms.append((ablate.Arm("batchnorm", {"model.batchnorm": True}), "underfitting"))
  if (get("model.block_dropout_rate") == 0.0 and
      (model == "ConvNet" or get("model.width_multiplier") is not None)):
    arms.append((ablate.Arm("block_dropout", {"model.block_dropout_rate": MENU_BLOCK_DROPOUT}), "overfitting"))
  if not get("optim.weight_decay"):
    arms.append((ablate.Arm("weight_decay", {"optim.weight_decay": MENU_WEIGHT_DECAY}), "overfitting"))
  if get("optim.schedule") != "cosine":
    arms.append((ablate.Arm("cosine", {"optim.schedule": "cosine"}), "lr_plateau"))
  suggestion = (run.lr_find or {}).get("suggestion")
  lr = get("optim.learning_rate")
  if suggestion and lr and not 1 / 1.5 < suggestion / lr < 1.5:
    arms.append((ablate.Arm("lr_range_test", {"optim.learning_rate": float(f"{suggestion:.2g}")}),
                 "lr_too_low" if suggestion > lr else "lr_too_high"))
  if get("early_stopping_patience") and run.workdir and rundir.read_json(run.workdir, rundir.EARLY_STOP_FILE):
    # The run stopped before its budget: every other arm keeps its patience, this one trains the whole budget.
    arms.append((ablate.Arm("no_early_stopping", {"early_stopping_patience": 0}), "underfitting"))
  augment = run.augment
  if not augment.random:
    channels = len((run.audit or {}).get("splits", {}).get("train", {}).get("channel_means", [0]))
    preset = {"augment.preset": "characters" if channels == 1 else "natural"}
    if channels > 1 and _flips_change_labels(run):  # `natural` flips: not where they change the labels
      preset["augment.horizontal_flip"] = False
    arms.append((ablate.Arm("augment", preset), "overfitting"))
  else:
    for field, neutral in _AUGMENT_OFF.items():
      value = getattr(augment, field)
      if value and value != (1.0, 1.0):
        arms.append((ablate.Arm(f"no_{field}", {f"augment.{field}": neutral}), "harmful_augmentation"))
  return arms


def ensure_lr_range_test(run: Run, out: str, log) -> None:
  """The LR range test for the menu's `lr_range_test` lever, where the run has none: `python -m cnn_val.lr_find
  --run=W --workdir=OUT` (a process of its own, as the sweep's runs are: the doctor imports nothing from
  training) writes lr_find.json, plots/lr_find.png and its log, lr_find.log, to `out` (under the run's verify/:
  the run's own files, which its diagnosis and its fixes read, stay as they were), or an earlier one there is
  read; `run.lr_find`, what the menu reads, is set from it. Seconds on the seed models (200 steps); a failure is
  logged, and the menu goes on without the lever."""
  if run.lr_find is not None or not run.workdir:
    return
  found, failed = rundir.read_lr_find(out, run.config)[0], None  # a test an earlier --verify ran, of this config
  if found is None:
    os.makedirs(out, exist_ok=True)
    command = [sys.executable, "-m", "cnn_val.lr_find", f"--run={run.workdir}", f"--workdir={out}"]
    log(f"No LR range test in {run.workdir}: running it for the menu's lr_range_test lever ({' '.join(command[1:])}).")
    logged = os.path.join(out, "lr_find.log")
    try:
      with open(logged, "w") as f:
        code = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                              timeout=LR_TEST_TIMEOUT_S, check=False).returncode
      failed = code != 0 and f"exit {code}; its output: {logged}"
    except (OSError, subprocess.TimeoutExpired) as e:
      failed = f"{type(e).__name__}: {e}"
    found = None if failed else rundir.read_json(out, rundir.LR_FIND_FILE)
  if failed or not (found or {}).get("suggestion"):
    log(f"The LR range test gave no suggestion ({failed or f'none in {out}/{rundir.LR_FIND_FILE}'}); the menu goes "
        f"on without its lr_range_test lever.")
    return
  run.lr_find = found
  log(f"LR range test: {found['suggestion']:.2g} suggested, {run.get('optim.learning_rate')} configured "
      f"({found.get('method')}).")


def _flips_change_labels(run: Run) -> bool:
  """Whether the augmentation check finds that horizontal flips change the labels of the run's data (measured
  on its data); False where it cannot be read."""
  if not run.workdir:
    return False
  from cnn_val import augment_check  # pylint: disable=import-outside-toplevel  (JAX; the data)
  try:
    return bool(augment_check.flips_change_labels(run.workdir)["label_destroying"])
  except Exception as e:  # pylint: disable=broad-except  (the data is elsewhere: the preset as it is)
    logging.warning("The augmentation check of flips on %s's data failed (%s: %s); the lever menu's `natural` "
                    "preset keeps its flips.", run.workdir, type(e).__name__, e)
    return False


def unbuildable(run: Run, arm: ablate.Arm) -> str | None:
  """Why `arm` cannot be built on this run's images (a seed model whose conv blocks, with the arm's
  `extra_blocks` and `convs_per_block`, would shrink the map below 1x1), or None. None too where the run's audit
  does not record its image shape (a run written before it did): the run itself then says so when it fails."""
  get = lambda field, default: arm.overrides.get(field, run.get(field, default))
  name = get("model.name", None)
  shape = (((run.audit or {}).get("splits") or {}).get("train") or {}).get("image_shape")
  if name not in ("SeedCNN", "SeedCNNDropout") or not shape:
    return None
  from cnn_val import models  # here: the doctor otherwise reads run directories without importing Flax
  convs, extra = int(get("model.convs_per_block", 1) or 1), int(get("model.extra_blocks", 0) or 0)
  allowed = models.seed_extra_blocks_allowed(shape[0], shape[1], models.SEED_BLOCKS[name], convs)
  if extra <= allowed:
    return None
  room = f"at most {allowed} extra at this depth" if allowed >= 0 else "too small even for the seed's own blocks"
  return (f"{name} with {convs} conv(s) a block and {extra} extra block(s) would shrink {shape[0]}x{shape[1]} "
          f"images below 1x1 ({room})")


class FollowUp(NamedTuple):
  """A second-stage arm: the `cause` it tests, `why` it is tried, and the confirmed arm it builds on (`parent`)."""
  arm: ablate.Arm
  cause: str
  why: str
  parent: str


def follow_up_arms(confirmed: list[tuple[ablate.Arm, str, dict]],
                   still_learning: Callable[[str], tuple[int, int] | None] | None = None,
                   get: Callable[[str], object] | None = None) -> list[FollowUp]:
  """The second stage, more of what worked (FollowUp). A confirmed `wider` lever once more (twice its width
  again), a confirmed `deeper_blocks` once more (another conv in each block) and with BatchNorm after each conv
  (`deeper_blocks_bn`, where the run has none and `get` says its model), a confirmed longer training (an arm
  that changes `num_epochs` alone) twice as long again where most of its runs were still learning when they
  stopped (`still_learning(arm name)`: (runs still learning, runs finished), by the single-run rule), a confirmed
  weaker regularisation (the underfitting finding's `weaker_regularization` option) weaker again, a confirmed
  regularisation (the overfitting finding's fix, or a menu regulariser: the one that gained most) with another
  conv in each block (`regularised_deeper`, where the
  run's model has conv blocks; `get` reads the run's config fields) and the same with BatchNorm after each conv
  (`regularised_deeper_bn`, where the run has none), a confirmed label fix (the label_noise finding's: training
  without, or with relabelled, or through the noise of, the likely-wrong labels) trained on the generalized
  cross-entropy (`robust_loss`, where neither run nor fix sets it), and, when two or more changes (levers, or
  findings' fixes) were confirmed, all of them together (the best first, skipping one whose fields an earlier one
  already sets). `parent` names the confirmed arm each extends (for `combined`, the best of its parts): the doctor
  judges the follow-up against it too, on the same seeds."""
  out = []
  # The regulariser that gained most among those whose model takes another conv in each block: one arm a name.
  regularisers = sorted(((verified["delta"], arm.name, _deeper_blocks_of(arm.overrides, get))
                         for arm, cause, verified in confirmed if get and cause == "overfitting"), reverse=True)
  deepened, deeper = next(((name, blocks) for _, name, blocks in regularisers if blocks), (None, {}))
  for arm, cause, verified in confirmed:
    if cause == "overfitting" and deepened:
      if arm.name != deepened:
        continue
      # A regularised model may gain from capacity; deeper plain nets train better normalised (README).
      out.append(FollowUp(ablate.Arm("regularised_deeper", deeper), cause,
                          "the confirmed regularisation, with another conv in each block", arm.name))
      if not deeper.get("model.batchnorm", get("model.batchnorm")):
        out.append(FollowUp(ablate.Arm("regularised_deeper_bn", {**deeper, "model.batchnorm": True}), cause,
                            "the confirmed regularisation, with another conv in each block and BatchNorm after "
                            "each conv", arm.name))
      continue
    if (cause == "label_noise" and arm.name not in LEVERS and not arm.overrides.get("gce_q")
        and not (get and get("gce_q"))):  # what the fix leaves wrong, weighted by how plausible it is
      out.append(FollowUp(ablate.Arm("robust_loss", {**arm.overrides, "gce_q": ROBUST_GCE_Q}), cause,
                          f"the confirmed label fix, trained on the generalized cross-entropy (q {ROBUST_GCE_Q})",
                          arm.name))
      continue
    if verified.get("option") == "weaker_regularization":  # a finding's fix: regularisation beyond the recipe
      again = weaker_again(arm.overrides)
      if again:
        out.append(FollowUp(ablate.Arm("weaker_x2", again), cause,
                            "the confirmed weaker regularisation, weaker again", arm.name))
      continue
    if set(arm.overrides) == {"num_epochs"}:
      learning, finished = (still_learning and still_learning(arm.name)) or (0, 0)
      if 2 * learning > finished:
        out.append(FollowUp(ablate.Arm("longer_x2", {"num_epochs": 2 * int(arm.overrides["num_epochs"])}),
                            "underfitting", f"the confirmed longer training, twice as long again: {learning} of "
                            f"its {finished} runs were still learning when they stopped", arm.name))
      continue
    if arm.name == "wider":
      doubled = {k: (2 * v if isinstance(v, (int, float)) else [2 * int(w) for w in v])
                 for k, v in arm.overrides.items()}
      out.append(FollowUp(ablate.Arm("wider_x2", doubled), "underfitting",
                          "the confirmed wider model, twice as wide again", arm.name))
    elif arm.name == "deeper_blocks":
      again = {"model.convs_per_block": int(arm.overrides["model.convs_per_block"]) + 1}
      out.append(FollowUp(ablate.Arm("deeper_blocks_x2", again), "underfitting",
                          "the confirmed deeper blocks, one more conv in each again", arm.name))
      if get and not get("model.batchnorm") and get("model.name") in BLOCK_MODELS:
        out.append(FollowUp(ablate.Arm("deeper_blocks_bn", {**arm.overrides, "model.batchnorm": True}),
                            "underfitting", "the confirmed deeper blocks, with BatchNorm after each conv", arm.name))
  ranked = sorted(confirmed, key=lambda c: -c[2]["delta"])
  combined, names, cause = {}, [], None
  for arm, arm_cause, _ in ranked:
    if not set(arm.overrides) & set(combined):
      combined.update(arm.overrides)
      names.append(arm.name)
      cause = cause or arm_cause
  if len(names) >= 2:
    out.append(FollowUp(ablate.Arm("combined", combined), cause,
                        f"the confirmed changes together: {' + '.join(names)}", names[0]))
  return out


def _deeper_blocks_of(overrides: dict, get: Callable[[str], object]) -> dict:
  """`overrides` with one more conv in each block of the model they build, or {} where that model has no conv
  blocks to deepen (ResNet) or the overrides set the blocks already."""
  model = overrides.get("model.name", get("model.name"))
  if model not in BLOCK_MODELS or "model.convs_per_block" in overrides:
    return {}
  return {**overrides, "model.convs_per_block": int(get("model.convs_per_block") or 1) + 1}


_CAUSE_TEXT = {
    "underfitting": "the model is too small for what the data allows.",
    "overfitting": "the model fits its training data more closely than it generalises; regularising helps.",
    "lr_plateau": "the learning rate does not decay far enough to settle into the minimum.",
    "lr_too_high": "a lower learning rate trains better.", "lr_too_low": "a higher learning rate trains better.",
    "harmful_augmentation": "this augmentation changes what the images mean.",
    "distribution_shift": "training and validation images differ, and the change makes the model indifferent to it.",
    "class_imbalance": "the long tail biased the model towards the majority classes.",
    "label_noise": "wrong training labels cost accuracy.",
    "diverged": "the run diverged, and the change keeps it stable.",
}


_BATCHNORM_TEXT = ("the same model fits better with each conv layer's activations normalised (BatchNorm): it "
                   "was limited by how well it trains, not by its size.")

_LONGER_TEXT = ("the run was cut short; validation accuracy was still rising when it stopped, and more epochs win "
                "it.")

_NO_STOP_TEXT = ("early stopping ended the run before it had stopped gaining: trained to the end of its budget (the "
                 "best checkpoint kept either way) it wins more.")

_DEEPER_BN_TEXT = ("the deeper model trains better with each conv's activations normalised (BatchNorm): a deeper "
                   "plain network is harder to optimise, and the depth pays more once it trains well.")

_REGULARISED_DEEPER_TEXT = ("with its overfitting held in check, the model gains from more capacity: another conv "
                            "before each pool fits more of what the data allows.")

_ROBUST_LOSS_TEXT = ("the labels the fix leaves wrong still pull on the model: the generalized cross-entropy weighs "
                     "each example's gradient by the probability the model gives its label (p^q of the "
                     "cross-entropy's), so the labels it finds implausible, most of the wrong ones, pull less "
                     "(Zhang and Sabuncu, NeurIPS 2018).")

_WEAKER_TEXT = ("the run regularises more than the model can afford: with weaker regularisation it fits what the "
                "data allows.")

_DEEPER_BLOCKS_TEXT = ("the model is too shallow where its maps are largest: another conv before each pool adds "
                       "depth without another halving of the map (as VGG deepens).")


# Why a confirmed arm helped: by the arm (follow-ups of several fields), else by the one field it changes, else by
# its cause.
_ARM_TEXT = {"weaker_x2": _WEAKER_TEXT, "regularised_deeper": _REGULARISED_DEEPER_TEXT,
             "regularised_deeper_bn": _REGULARISED_DEEPER_TEXT, "robust_loss": _ROBUST_LOSS_TEXT,
             "deeper_blocks_bn": _DEEPER_BN_TEXT}
_FIELD_TEXT = {"model.batchnorm": _BATCHNORM_TEXT, "model.convs_per_block": _DEEPER_BLOCKS_TEXT,
               "num_epochs": _LONGER_TEXT, "early_stopping_patience": _NO_STOP_TEXT}


def _describe(overrides) -> str:
  return ", ".join(f"config.{k}={v}" for k, v in overrides.items())


def versus_text(versus: dict | None) -> str:
  """A sentence on a follow-up arm against the confirmed arm it extends (experiments' `vs_parent`), or ''."""
  if not versus:
    return ""
  ci = versus["ci95"]  # judging.versus makes one only from two seeds on, where the interval exists
  cost = f", at about {versus['seconds_ratio']:.1f}x its wall time a run" if versus.get("seconds_ratio") else ""
  verdict = ("the step beyond it is confirmed too" if versus["confirmed"] else
             f"below it: `{versus['arm']}` alone is the better change" if ci[1] < 0 else
             f"not beyond the seeds' noise: `{versus['arm']}` alone, the simpler change, is within it (more seeds "
             f"would tell)")
  return (f" Against `{versus['arm']}` on the same {versus['seeds']} seeds: {100 * versus['delta']:+.2f} points "
          f"(95% CI {100 * ci[0]:+.2f} to {100 * ci[1]:+.2f}){cost}: {verdict}.")


def lever_finding(arm: ablate.Arm, cause: str, verified: dict, note: str | None, high_gain: float) -> dict:
  """A confirmed lever (or follow-up arm) as a finding of the cause it tests, sized by its verified gain:
  `high` from `high_gain` up, else `medium`."""
  gain = verified["delta"]
  what = (f"Changing {'these together' if len(arm.overrides) > 1 else 'one thing'}, {_describe(arm.overrides)}"
          + (f" ({note})" if note else ""))
  alone = next(iter(arm.overrides)) if len(arm.overrides) == 1 else None
  why = _ARM_TEXT.get(arm.name) or _FIELD_TEXT.get(alone) or _CAUSE_TEXT.get(cause, "the change addresses this cause.")
  return {
      "cause": cause, "severity": "high" if gain >= high_gain else "medium",
      "confidence": round(min(0.95, 1 - (verified["p_value"] or 0.05)), 3),
      "evidence": {"lever": arm.name, "overrides": dict(arm.overrides), "gain": gain, "ci95": verified["ci95"],
                   "seeds": verified["seeds"], **({"follow_up": note} if note else {})},
      "explanation": f"{what}, raised validation accuracy by {100 * gain:.2f} points (95% CI "
                     f"{100 * verified['ci95'][0]:+.2f} to {100 * verified['ci95'][1]:+.2f}) over "
                     f"{verified['seeds']} seeds against the same seeds of the unchanged config: " + why
                     + versus_text(verified.get("vs_parent")),
      "fix": {"summary": f"Apply {_describe(arm.overrides)}.",
              "overrides": {f"config.{k}": v for k, v in arm.overrides.items()}},
      "verified": verified, "source": "experiment"}
