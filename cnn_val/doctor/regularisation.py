"""Regularisation in the doctor's signal rules: how much of the early update ratio decoupled weight decay alone can
make (so that a strong decay is not read as a rate too high), and the regularisation a run adds beyond the seed's
recipe, which an underfitting model's fix weakens (README, "Regularisation too strong")."""

from __future__ import annotations

from cnn_val.doctor.run_view import Run, finite

# The seed's dropout before the head (its example 3, SeedCNNDropout): more than this, like any weight decay or dropout
# after each block, is regularisation beyond the seed's recipe, which an underfitting model first loses
# (`weaker_regularization`; README, "Regularisation too strong").
SEED_DROPOUT = 0.5
# The models built of conv blocks (a conv, or several, then a pool): block dropout, another conv in each block and
# BatchNorm after each conv apply to them (not to ResNet's stages).
BLOCK_MODELS = ("SeedCNN", "SeedCNNDropout", "ConvNet")
# ... first among the options where it is material: dropout beyond the seed's, or a decoupled weight decay that can
# make this share of the early step's size or more (Fashion-MNIST's recipe at weight decay 1: up to 24%, -5.4 points;
# at AdamW's usual 1e-2: 0.3%); a smaller or L2 decay is tried after the other options.
DECAY_SHARE_FIRST = 0.1


def _number(run: Run, field: str) -> float:
  """A numeric config field as a float; 0 where it is absent, None or not a number (a config from before it)."""
  value = run.get(field)
  return float(value) if isinstance(value, (int, float)) else 0.0


def decay_ratio_bound(run: Run) -> float:
  """How much of the update/parameter ratio decoupled weight decay alone can make: it adds -lr * weight_decay * w
  (kernels only) to every step, so at most lr * weight_decay of ||step|| / ||weights|| (the peak rate: no step's is
  higher). 0 for L2 decay, which goes through the optimizer's own scaling with the gradient (Adam's normalisation,
  SGD's momentum): no bound is taken off there. Fashion-MNIST's recipe at decoupled weight decay 5 read a ratio of
  7.8e-3, up to 5e-3 of it the decay's (README, "Regularisation too strong")."""
  if run.get("optim.weight_decay_mode", "decoupled") != "decoupled":
    return 0.0
  return _number(run, "optim.learning_rate") * _number(run, "optim.weight_decay")


def gradient_ratio(run: Run) -> float | None:
  """The early update ratio less what decoupled weight decay can make of it (decay_ratio_bound): the least the
  optimizer's own steps moved the weights by. A rate too high is read on this; one too low on the ratio itself."""
  ratio = run.early_update_ratio
  return None if ratio is None else max(0.0, ratio - decay_ratio_bound(run))


def weaker_regularization(run: Run) -> tuple[dict, str, str, bool]:
  """Overrides that weaken the regularisation a run adds beyond the seed's recipe (any weight decay: a tenth of it;
  dropout before the head above the seed's SEED_DROPOUT: back to it; dropout after each block: halved), what the run
  has, what they change, and whether it is material enough to try first (DECAY_SHARE_FIRST); ({}, '', '', False)
  where it has none."""
  out, has, changes, first = {}, [], [], False

  def weaken(field, what, old, new, note=""):
    out[f"config.{field}"] = new
    has.append(f"{what} {old:g}{note}")
    changes.append(f"{what} {old:g} -> {new:g}")

  wd = _number(run, "optim.weight_decay")
  if wd > 0:
    bound, ratio = decay_ratio_bound(run), run.early_update_ratio
    share = min(1.0, bound / ratio) if bound and ratio else None
    first = share is not None and share >= DECAY_SHARE_FIRST
    said = "" if share is None else f", {'under 1%' if share < 0.01 else f'up to {share:.0%}'} of each early step"
    mode = run.get("optim.weight_decay_mode", "decoupled")
    weaken("optim.weight_decay", "weight decay", wd, wd / 10, f", {mode}{said}")
  model = run.get("model.name")
  rate, block = _number(run, "model.dropout_rate"), _number(run, "model.block_dropout_rate")
  if model in ("SeedCNNDropout", "ConvNet") and rate > SEED_DROPOUT:
    weaken("model.dropout_rate", "dropout before the head", rate, SEED_DROPOUT)
    first = True
  if model in BLOCK_MODELS and block > 0:
    weaken("model.block_dropout_rate", "dropout after each block", block, round(block / 2, 4))
    first = True
  return out, "; ".join(has), ", ".join(changes), first


def weaker_again(overrides: dict) -> dict:
  """A confirmed `weaker_regularization` fix's overrides (fields without the `config.` prefix) weakened once more,
  by the same steps (weight decay a tenth again, dropout after each block halved again; dropout before the head
  stays at the seed's SEED_DROPOUT, where the fix put it): the follow-up `weaker_x2`. One decade of decay can leave
  points behind (AdamW 5 -> 0.5 recovered 80% of the loss) with no single-run evidence left for another step: its
  runs no longer read underfitting; the experiment decides. {} where nothing can be weakened again."""
  again = dict(overrides)
  for field, value in overrides.items():
    if not finite(value) or value <= 0:
      continue
    if field == "optim.weight_decay":
      again[field] = float(f"{value / 10:.3g}")
    elif field == "model.block_dropout_rate":
      again[field] = round(value / 2, 4)
  return again if again != overrides else {}


def l2_decay_blurs_ratio(run: Run) -> bool:
  """L2 weight decay shrinks the weights through the gradient, which raises the update ratio with no bound to take
  off (decay_ratio_bound): a ratio above UPDATE_RATIO_HIGH then does not stop the underfitting rule, whose options
  weaken the decay (Adam at 1e-3 with L2 0.01 on Fashion-MNIST's recipe: 5.1e-3, -5.4 points, like AdamW at 1)."""
  return run.get("optim.weight_decay_mode") == "l2" and _number(run, "optim.weight_decay") > 0
