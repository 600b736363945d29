"""Evaluates a run directory's checkpoint on a split, without training:

    python -m cnn_val.evaluate --workdir=runs/default [--checkpoint=best|latest] [--split=test|validation]
        [--weights=trained|ema]

The run's own config.json rebuilds the data (with its scenario and levers), the model and the optimizer state's
shape; the checkpoint is restored (and checked against its SHA-256) and evaluated exactly as training evaluates
(eval mode, every example once, the last batch padded and masked), so the best checkpoint's validation
accuracy is the one metrics.jsonl recorded for it (`--weights=ema`: the moving average of the weights a run
with config.ema_decay > 0 keeps, recorded as ema_val_accuracy). `evaluate_checkpoint` is the function behind
the command.
"""

from __future__ import annotations

import json
import sys
from typing import NamedTuple

from absl import app
from absl import flags
import jax

from cnn_val import checkpoint, cli, models, optim, parallel, rundir, steps
from cnn_val.data import balance, loading

CHECKPOINTS = ("best", "latest")
SPLITS = ("test", "validation", "train")
WEIGHTS = ("trained", "ema")


class _Restored(NamedTuple):
  config: object  # the run's config, evaluated on one device
  splits: object
  arrays: dict
  state: object
  step: int
  tx: object


def _restore(workdir: str, checkpoint_name: str, weights: str) -> _Restored:
  """The run's data (from its own config.json) and its `checkpoint_name` checkpoint, restored and checked."""
  from cnn_val.ablate.sweep import stored_config  # pylint: disable=import-outside-toplevel
  if checkpoint_name not in CHECKPOINTS:
    raise ValueError(f"--checkpoint={checkpoint_name!r}: expected one of {list(CHECKPOINTS)}.")
  if weights not in WEIGHTS:
    raise ValueError(f"--weights={weights!r}: expected one of {list(WEIGHTS)}.")
  config = stored_config(workdir)
  keeps_ema = config.get("ema_decay", 0.0) > 0
  if weights == "ema" and not keeps_ema:
    raise ValueError(f"--weights=ema: {workdir} was trained without a moving average of its weights "
                     "(config.ema_decay = 0); use --weights=trained, or train with --config.ema_decay=0.999.")
  splits, arrays = loading.load_data(config)
  counts = balance.class_counts(arrays["train"]["label"], splits.num_classes)
  tx = optim.create_optimizer(config.optim, 1, 1)  # the optimizer state's shape; its schedule is not used
  state = steps.create_train_state(models.create_model(config.model, splits.num_classes, class_prior=counts), tx,
                                   jax.random.key(config.seed), splits.image_shape, ema=keeps_ema)
  ckpts = checkpoint.Checkpoints(workdir)
  try:
    if checkpoint_name == "best":
      restored, step = ckpts.restore_best(state), ckpts.best.best_step()
    else:
      restored, step = ckpts.restore_latest(state), ckpts.latest_step()
  finally:
    ckpts.close()
  if restored is None:
    raise FileNotFoundError(f"{workdir}/checkpoints/{checkpoint_name} holds no checkpoint: train the run first.")
  if weights == "ema":
    restored = steps.ema_weights(restored)
  eval_config = config.copy_and_resolve_references()
  with eval_config.unlocked():
    eval_config.num_devices = 1
  return _Restored(eval_config, splits, arrays, restored, int(step), tx)


def evaluate_checkpoint(workdir: str, checkpoint_name: str = "best", split: str = "test",
                        weights: str = "trained") -> dict:
  """{'split', 'checkpoint', 'weights', 'step', 'loss', 'accuracy', 'count', per-class metrics, 'confusion'} of
  the run's `checkpoint_name` checkpoint on `split`, with its trained weights or their moving average."""
  from cnn_val import training_run  # pylint: disable=import-outside-toplevel  (training's evaluate, exactly)
  if split not in SPLITS:
    raise ValueError(f"--split={split!r}: expected one of {list(SPLITS)}.")
  run = _restore(workdir, checkpoint_name, weights)
  dataset = {"test": run.splits.test, "validation": run.splits.validation,
             "train": run.arrays["train"]}[split]
  if dataset is None:
    raise ValueError(f"{workdir}'s data has no {split} split.")
  devices = parallel.select_devices(1)
  p_eval = steps.pmapped_steps(run.config, run.splits.num_classes, run.tx, devices).eval
  result = training_run.evaluate(p_eval, run.state, dataset, config=run.config, num_devices=1,
                                 num_classes=run.splits.num_classes, split_name=split)
  return {"split": split, "checkpoint": checkpoint_name, "weights": weights, "step": run.step, **result}


def write_train_predictions(workdir: str, checkpoint_name: str = "best") -> str:
  """The doctor's label-check file (`train_predictions.npz`) for a run that lacks it (trained before training
  wrote it, or with the file deleted): the checkpoint's outputs on the training split, as training writes them
  at its last evaluation (from the best checkpoint, the default here too; named 'latest', as training names it,
  where the best checkpoint is the final weights). Returns the path."""
  from cnn_val import training_run  # pylint: disable=import-outside-toplevel  (the function training calls)
  run = _restore(workdir, checkpoint_name, "trained")
  devices = parallel.select_devices(1)
  p_predict = steps.pmapped_predict(run.config, run.splits.num_classes, devices)
  rows = rundir.read_metrics(workdir)
  if rows and run.step == rows[-1]["step"]:  # the best checkpoint is the final weights: named as training names it
    checkpoint_name = "latest"
  return training_run.write_train_predictions(workdir, p_predict, run.state, run.arrays["train"],
                                              checkpoint_name=checkpoint_name, step=run.step, config=run.config,
                                              num_devices=1, num_classes=run.splits.num_classes)


def _define_flags() -> None:
  """The command's flags, defined only when it runs as a command: importing the module defines none, so it
  imports into another absl program (whose own --workdir it would clash with)."""
  flags.DEFINE_string("workdir", None, "Run directory to evaluate.", required=True)
  flags.DEFINE_enum("checkpoint", "best", list(CHECKPOINTS), "Which checkpoint.")
  flags.DEFINE_enum("split", "test", list(SPLITS), "Which split.")
  flags.DEFINE_enum("weights", "trained", list(WEIGHTS),
                    "The trained weights, or their moving average (runs with config.ema_decay > 0).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  cli.keep_tensorflow_off_accelerators()
  f = flags.FLAGS
  result = evaluate_checkpoint(f.workdir, f.checkpoint, f.split, f.weights)
  summary = {k: result[k] for k in ("split", "checkpoint", "weights", "step", "accuracy", "loss", "count")}
  summary.update(balanced_accuracy=result.get("balanced_accuracy"), macro_f1=result.get("macro_f1"))
  json.dump(summary, sys.stdout)
  print()


if __name__ == "__main__":
  _define_flags()
  cli.run(main)
