"""One run directory through training, as `train.train_and_evaluate` and `population.train_population` both
take it: the data a run loads (`load`), the run opened or resumed (`open_run`: audit, state, checkpoint,
metrics, pre-flight checks), what each epoch ends with (`end_of_epoch`: validation, the training probe, test,
the metrics row, the checkpoint, early stopping), the record of a divergence and the run's close (the
doctor, the summary, timing.json). Evaluation of a state on a split (`evaluate`, `Evaluator`) and the errors
a run stops with live here too. The loops that train the steps are the callers'.
"""

from __future__ import annotations

import dataclasses
import functools
import signal
import time
from typing import Any

from absl import logging
import jax
import numpy as np

from cnn_val import (audit, augment, augment_check, checkpoint, doctor, lr_range, metrics, models, optim, preflight,
                     rundir, steps, train_loop)
from cnn_val.data import balance, loading, pipeline


class NonFiniteLossError(FloatingPointError):
  """The loss or gradient became NaN/Inf; the last good checkpoint is kept."""

  def __init__(self, message: str, step: int):
    super().__init__(message)
    self.step = step


def _sum_metrics(metric_list) -> dict:
  """Metric sums over steps; `first_*` metrics (e.g. the first non-finite step) take the minimum instead."""
  host = jax.device_get(metric_list)
  reduce = lambda k: np.min if k.startswith("first_") else functools.partial(np.sum, axis=0)
  return {k: reduce(k)([np.asarray(m[k]) for m in host]) for k in host[0]}


def evaluate(p_eval, state, ds, *, config, num_devices, num_classes, split_name) -> dict:
  batches = pipeline.eval_batches(ds, global_batch=config.eval_batch_size, num_devices=num_devices,
                                  num_classes=num_classes, split_name=split_name)
  sums = _sum_metrics([p_eval(state, batch) for batch in batches])
  return {
      "loss": float(sums["loss_sum"] / sums["count"]),
      "accuracy": float(sums["correct"] / sums["count"]),
      "count": int(sums["count"]),
      "confusion": [[int(c) for c in row] for row in sums["confusion"]],
      **metrics.from_confusion(sums["confusion"]),
  }


def train_probe(train_arrays: dict, examples: int):
  """A fixed, seeded subset of the training split (the same examples every epoch and on resume), as a dataset
  that `evaluate` reads like validation (arrays); None when off."""
  if not examples:
    return None
  n = len(train_arrays["label"])
  idx = np.sort(np.random.default_rng(0).choice(n, min(int(examples), n), replace=False))
  return {k: v[idx] for k, v in train_arrays.items()}


def predict(p_predict, state, ds, *, config, num_devices, num_classes) -> np.ndarray:
  """Softmax probabilities `[N, K]` of every example of `ds`, in order (one process)."""
  batches = pipeline.eval_batches(ds, global_batch=config.eval_batch_size, num_devices=num_devices,
                                  num_classes=num_classes, split_name="train")
  out = [jax.device_get(p_predict(state, batch)) for batch in batches]
  probs = np.concatenate([o["probs"].reshape(-1, num_classes) for o in out])
  return probs[np.concatenate([o["mask"].reshape(-1) for o in out])]


def write_train_predictions(workdir: str, p_predict, state, train_arrays: dict, *, checkpoint_name: str,
                            step: int, **eval_kw) -> str:
  """`train_predictions.npz`: every training example's softmax outputs (float16) with `state`, its label and
  index in the training split as loaded (the doctor's label check; about one forward pass over the split), and
  which weights gave them: `checkpoint` ('best' or 'latest') and the `step` they were trained to."""
  probs = predict(p_predict, state, train_arrays, **eval_kw)
  return rundir.write_npz(workdir, rundir.TRAIN_PREDICTIONS_FILE, probs=probs.astype(np.float16),
                          labels=train_arrays["label"].astype(np.int32), index=np.arange(len(probs)),
                          checkpoint=np.array(checkpoint_name), step=np.array(step, np.int64))


def check_finite(sums, step: int, workdir: str, ckpts) -> None:
  if sums["nonfinite_steps"]:
    last = ckpts.latest_step()
    kept = (f"the last good checkpoint (step {last}) is kept in {workdir}/checkpoints/latest"
            if last is not None else "no checkpoint had been written yet")
    if "first_nonfinite_step" in sums:  # the step itself, not the logging boundary that found it
      step = int(sums["first_nonfinite_step"])
    raise NonFiniteLossError(
        f"Training stopped: the loss or gradient became NaN/Inf at step {step}; {kept}. This usually means "
        f"the learning rate is too high (config.optim.learning_rate) or the inputs are not normalised. Lower "
        f"the learning rate or set config.optim.grad_clip_norm, and start again in a new --workdir.", step)


class TrainingInterrupted(Exception):
  """SIGINT or SIGTERM stopped training at a step boundary; the run resumes from its latest checkpoint."""

  def __init__(self, signum: int, step: int, workdir: str, resume_step: int | None):
    self.signum, self.step = signum, step
    self.exit_code = 128 + signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM
    since = (f"from its checkpoint at step {resume_step}" if resume_step is not None else "from the start")
    super().__init__(
        f"Interrupted by {signal.Signals(signum).name} at step {step}; {workdir} is intact. Run the same command "
        f"again to resume {since} (the steps since it are trained again, to the same result).")


@dataclasses.dataclass
class RunData:
  """The loaded splits and what every run of them derives alike (a population's members share one)."""
  splits: Any
  arrays: dict
  counts: np.ndarray
  class_weights: np.ndarray | None
  logit_offsets: np.ndarray | None
  epoch_examples: int
  steps_per_epoch: int
  total_steps: int
  noise_transition: np.ndarray | None = None  # [K, K] (config.data.noise_transition)
  reweight_from_step: int = 0  # the class weights apply from this step on (config.imbalance.deferred_epochs)
  gce_q: float = 0.0  # the generalized cross-entropy's q, 0 for the cross-entropy (config.gce_q)

  @property
  def train_arrays(self) -> dict:
    return self.arrays["train"]

  @property
  def num_classes(self) -> int:
    return self.splits.num_classes

  @property
  def loss_terms(self) -> dict:
    """The class weights (and the step they apply from), logit offsets, noise transition matrix and the
    generalized cross-entropy's q as the step builders take them (`steps.pmapped_steps(..., **loss_terms)`):
    tuples of floats (rows of them for the matrix), or None, and q a float (0: the cross-entropy)."""
    as_tuple = lambda a: None if a is None else tuple(float(x) for x in a)
    matrix = None if self.noise_transition is None else tuple(as_tuple(row) for row in self.noise_transition)
    return {"class_weights": as_tuple(self.class_weights), "logit_offsets": as_tuple(self.logit_offsets),
            "noise_transition": matrix, "reweight_from_step": self.reweight_from_step, "gce_q": float(self.gce_q)}


def load(config, devices, cpu_devices, clock: train_loop.WallTime) -> RunData:
  with clock("load data"):
    splits, arrays = loading.load_data(config)
  augment.check_channels(augment.from_config(config.augment), splits.image_shape[-1])
  num_classes = splits.num_classes
  counts = balance.class_counts(arrays["train"]["label"], num_classes)
  resampling = config.imbalance.resampling
  epoch_examples = balance.epoch_size(counts, resampling)
  class_weights = balance.class_weights(counts, config.imbalance.class_weighting, config.imbalance.beta)
  offsets = balance.logit_offsets(counts, config.imbalance.get("logit_adjustment", 0.0), resampling)
  transition = (loading.noise_transition(config.data.noise_transition, num_classes)
                if config.data.get("noise_transition") else None)
  steps_per_epoch = epoch_examples // config.batch_size
  if steps_per_epoch == 0:
    raise ValueError(f"config.batch_size={config.batch_size} exceeds the {epoch_examples} training "
                     f"examples per epoch; lower config.batch_size or raise config.data.max_train_examples.")
  logging.info("Data %s: %d train (%d per epoch, resampling %s), %d validation, %d test examples, %d classes, "
               "images %s; %d %s device(s)%s.", config.data.name, splits.num_train, epoch_examples, resampling,
               splits.num_validation, splits.num_test, num_classes, splits.image_shape, len(devices),
               devices[0].platform, "" if cpu_devices is None else f" (config.cpu_devices -> {cpu_devices} CPU)")
  deferred = config.imbalance.get("deferred_epochs", 0)
  if class_weights is not None:
    logging.info("Class weights (%s)%s: %s", config.imbalance.class_weighting,
                 f" from epoch {deferred + 1} on (deferred re-weighting)" if deferred else "",
                 np.round(class_weights, 3).tolist())
  if offsets is not None:
    logging.info("Logit adjustment (tau %s): %s", config.imbalance.logit_adjustment, np.round(offsets, 3).tolist())
  if transition is not None:
    logging.info("Forward loss correction for noisy labels with %s (P(given label | true class) on the "
                 "diagonal: %s).", config.data.noise_transition, np.round(np.diag(transition), 3).tolist())
  gce_q = config.get("gce_q", 0.0)
  if gce_q:
    logging.info("Generalized cross-entropy, q %s (the loss (1 - p^q) / q of the label's probability p).", gce_q)
  return RunData(splits, arrays, counts, class_weights, offsets, epoch_examples, steps_per_epoch,
                 steps_per_epoch * config.num_epochs, transition, deferred * steps_per_epoch, gce_q)


@dataclasses.dataclass
class Run:
  """One run directory through training: its config, optimizer, state, checkpoints, metrics writer and what
  its evaluations have seen so far (`train_and_evaluate` keeps one; a population one per member)."""
  config: Any
  workdir: str
  schedule: Any
  tx: Any
  dropout_key: Any
  state: Any
  ckpts: checkpoint.Checkpoints
  start_step: int
  steps_per_epoch: int
  writer: Any = None
  stopped: dict | None = None
  row: dict = dataclasses.field(default_factory=dict)
  val_history: list = dataclasses.field(default_factory=list)
  patience: int = 0
  label: str = ""  # starts its log lines (a population's member)

  @property
  def epochs_left(self) -> range:
    """The epochs this call trains: none for a run that stopped early (it is finished)."""
    return range(self.start_step // self.steps_per_epoch, self.config.num_epochs if self.stopped is None else 0)


def open_run(config, workdir: str, data: RunData, clock: train_loop.WallTime) -> Run:
  """Everything a run directory needs before its first step: the audit and, where the augmentation flips,
  rotates, shifts, shears or zooms, the augmentation check (once per run), the state (resumed from
  the latest checkpoint), the metrics truncated to it, the pre-flight checks and the LR range test (a new run) and
  the writer."""
  arrays, num_classes = data.arrays, data.num_classes
  if jax.process_index() == 0 and rundir.read_json(workdir, rundir.AUDIT_FILE) is None:  # once per run
    with clock("audit"):
      report = audit.cached_audit(arrays, num_classes, data.splits.class_names)  # shared by a sweep's runs
    rundir.write_json(workdir, rundir.AUDIT_FILE, report)
    logging.info("Dataset audit written to %s/%s (%.1f s).", workdir, rundir.AUDIT_FILE, report["seconds"])
  augmentation = augment.from_config(config.augment)
  if (jax.process_index() == 0 and augment_check.transforms(augmentation)
      and rundir.read_json(workdir, rundir.AUGMENT_CHECK_FILE) is None):  # once per run, where it augments
    with clock("augmentation check"):
      report = augment_check.cached_check(arrays, augmentation, num_classes)
    if report is not None:
      augment_check.write(workdir, report)
  missing = [c for c in range(num_classes) if data.counts[c] == 0]
  if missing:  # trained anyway (an open-set evaluation may mean it); the doctor makes it a finding
    val_counts = balance.class_counts(arrays["validation"]["label"], num_classes)
    names = data.splits.class_names
    logging.warning("No training images for class(es) %s (validation holds %s of them): the model cannot learn "
                    "them. Add training images, or remove the class from validation and test; the doctor reports "
                    "it as missing_class.", ", ".join(f"{c} ({names[c]})" if names else str(c) for c in missing),
                    ", ".join(str(int(val_counts[c])) for c in missing))

  steps_per_epoch = data.steps_per_epoch
  schedule = optim.create_schedule(config.optim, steps_per_epoch, config.num_epochs)
  tx = optim.create_optimizer(config.optim, steps_per_epoch, config.num_epochs)
  init_key, dropout_key = jax.random.split(jax.random.key(config.seed))
  with clock("model and optimizer init"):
    state = steps.create_train_state(
        models.create_model(config.model, num_classes, class_prior=data.counts), tx, init_key,
        data.splits.image_shape, ema=config.get("ema_decay", 0.0) > 0)
  logging.info("Model %s: %d parameters.", config.model.name,
               sum(x.size for x in jax.tree.leaves(state.params)))

  ckpts = checkpoint.Checkpoints(workdir, cleanup=True)  # this process holds the run's lock
  recorded = rundir.read_metrics(workdir)
  with clock("checkpoints"):
    restored = ckpts.restore_latest(state, max_step=recorded[-1]["step"] if recorded else 0)
  total_steps = data.total_steps
  if restored is not None:
    state = restored
    if int(state.step) == total_steps:
      logging.info("%s is already finished (step %d of %d): nothing to train; the doctor runs again. To train "
                   "longer, start a new --workdir with a larger --config.num_epochs (the schedule depends on it).",
                   workdir, total_steps, total_steps)
    else:
      logging.info("Resuming from the checkpoint at step %d.", int(state.step))
  start_step = int(state.step)
  if start_step % steps_per_epoch:
    ckpts.close()
    raise ValueError(f"The checkpoint in {workdir} is at step {start_step}, not an epoch boundary of "
                     f"{steps_per_epoch} steps: the data or batch size changed since it was written.")
  history = rundir.truncate_metrics(workdir, start_step, recorded)

  if (config.preflight and start_step == 0 and jax.process_index() == 0
      and rundir.read_json(workdir, rundir.PREFLIGHT_FILE) is None):
    with clock("pre-flight checks"):
      checks = preflight.run_checks(config, arrays, num_classes, data.splits.image_shape)
    rundir.write_json(workdir, rundir.PREFLIGHT_FILE, checks)
    failed = [c["message"] for c in checks["checks"] if not c["passed"]]
    logging.log(logging.WARNING if failed else logging.INFO, "Pre-flight checks (%.1f s): %s", checks["seconds"],
                "; ".join(failed) if failed else "all passed")
  if (config.preflight and config.get("lr_range_test", False) and start_step == 0 and jax.process_index() == 0
      and not lr_range.measured_for(workdir, config)):  # one of this config written before training is kept
    with clock("LR range test"):
      lr_range.sweep_into(workdir, config, arrays, num_classes, data.splits.image_shape)

  run = Run(config, workdir, schedule, tx, dropout_key, state, ckpts, start_step, steps_per_epoch)
  run.writer = rundir.MetricsWriter(workdir)
  if start_step == 0:  # TensorBoard's HParams view: the config beside the metrics, once per run
    run.writer.hparams(rundir.config_to_dict(config))
  run.patience = int(config.get("early_stopping_patience", 0))
  run.stopped = rundir.read_json(workdir, rundir.EARLY_STOP_FILE)  # a run that stopped early is finished
  if run.stopped is not None and run.stopped.get("step") != start_step:
    # Its checkpoint was lost (a fallback to an earlier one): the epochs after are redone, and the stop's file goes,
    # so that neither a sweep nor the doctor reads the redone run as stopped there.
    run.stopped = None
    rundir.remove(workdir, rundir.EARLY_STOP_FILE)
  run.row = history[-1] if (start_step == total_steps or run.stopped) and start_step else {}
  run.val_history = [r["val_accuracy"] for r in history]
  return run


class Evaluator:
  """A run's evaluations with the compiled eval step: validation, test, the training probe
  (`config.train_eval_examples`), the predictions over the training split (its data and devices fixed; any
  member's state)."""

  def __init__(self, p_eval, data: RunData, config, devices):
    self.p_eval, self.data, self.devices = p_eval, data, devices
    self.train_probe = train_probe(data.train_arrays, config.get("train_eval_examples", 0))
    self.kw = dict(config=config, num_devices=len(devices), num_classes=data.num_classes)
    self._predict = None

  def __call__(self, state, ds, split_name: str) -> dict:
    return evaluate(self.p_eval, state, ds, split_name=split_name, **self.kw)

  def write_train_predictions(self, workdir: str, config, state, *, checkpoint_name: str, step: int) -> None:
    if self._predict is None:
      self._predict = steps.pmapped_predict(config, self.data.num_classes, self.devices)
    write_train_predictions(workdir, self._predict, state, self.data.train_arrays, checkpoint_name=checkpoint_name,
                            step=step, **self.kw)


def end_of_epoch(run: Run, evaluate_split: Evaluator, train: dict, step: int, epoch: int,
                  clock: train_loop.WallTime) -> str:
  """After epoch `epoch` (0-based) trained to `step` with the summed metrics `train`: evaluates (on the
  config's schedule), writes the metrics row, saves the checkpoint and, when early stopping says so, its
  record. Returns 'skipped' (no evaluation this epoch), 'evaluated' or 'stopped' (early stopping: the run
  ends here)."""
  config, state, splits = run.config, run.state, evaluate_split.data.splits
  last_epoch = epoch + 1 == config.num_epochs
  if not last_epoch and (epoch + 1) % config.eval_every_epochs:
    return "skipped"
  with clock("validation"):
    val = evaluate_split(state, splits.validation, "validation")
  val_history = run.val_history
  best_val = max(val_history, default=None)  # before this evaluation
  val_history.append(val["accuracy"])
  since_best = len(val_history) - 1 - val_history.index(max(val_history))  # a tie is no improvement
  stopping = bool(run.patience) and not last_epoch and since_best >= run.patience
  last_epoch = last_epoch or stopping  # an early stop is the run's last evaluation: test metrics too
  row = {
      "step": step, "epoch": epoch + 1, "lr": float(run.schedule(step)),
      "train_loss": float(train["loss_sum"] / train["count"]),
      "train_accuracy": float(train["correct"] / train["count"]),
      "grad_norm": float(train["grad_norm_sum"] / train["steps"]),
      **({"update_ratio": float(train["update_ratio_sum"] / train["steps"])} if config.signals else {}),
      "val_loss": val["loss"], "val_accuracy": val["accuracy"],
      **{f"val_{k}": val[k] for k in ("balanced_accuracy", "macro_f1", "per_class_recall",
                                      "per_class_precision", "pred_histogram")},
  }
  if state.ema is not None:  # the moving average of the weights, evaluated alongside (config.ema_decay)
    with clock("validation"):
      ema_val = evaluate_split(steps.ema_weights(state), splits.validation, "validation")
    row.update(ema_val_loss=ema_val["loss"], ema_val_accuracy=ema_val["accuracy"])
  if evaluate_split.train_probe is not None:  # training accuracy measured like validation's (the doctor compares)
    with clock("training probe"):
      probe = evaluate_split(state, evaluate_split.train_probe, "train")
    row.update(train_eval_loss=probe["loss"], train_eval_accuracy=probe["accuracy"])
  # An earlier evaluation was better (ties keep the later one, as the checkpoints do): the best checkpoint's
  # weights, restored once for the label check and the test below, where either runs.
  earlier_best = last_epoch and best_val is not None and val["accuracy"] < best_val
  best_state = None
  if earlier_best and (jax.process_count() == 1 or splits.test is not None):
    with clock("checkpoints"):
      try:  # the run's own results stand without it; only these two extras are lost
        best_state = run.ckpts.restore_best(state)  # None only where no best checkpoint was kept
        missing = "was not kept"
      except checkpoint.CorruptCheckpointError as e:
        missing = f"cannot be restored ({e})"
    if best_state is None:
      logging.warning("%sThe best checkpoint %s: the label check reads the final weights, and the best "
                      "checkpoint's test accuracy is not recorded.", run.label, missing)
  best_step = int(run.ckpts.best.best_step()) if best_state is not None else None
  if last_epoch and jax.process_count() == 1:  # the doctor's label check (cleanlab) reads these
    # From the best checkpoint's weights where they are not the last: a model that went on to memorise wrong
    # labels agrees with them, and the best validation accuracy marks the model before it did (early learning).
    weights, name, at = (state, "latest", step) if best_state is None else (best_state, "best", best_step)
    with clock("training predictions"):
      evaluate_split.write_train_predictions(run.workdir, config, weights, checkpoint_name=name, step=at)
  if last_epoch or best_val is None or val["accuracy"] >= best_val:  # the best and the last evaluation
    row["val_confusion"] = val["confusion"]
  if last_epoch and splits.test is not None:
    with clock("test"):
      test = evaluate_split(state, splits.test, "test")
    row.update(test_loss=test["loss"], test_accuracy=test["accuracy"])
    if state.ema is not None:
      with clock("test"):
        ema_test = evaluate_split(steps.ema_weights(state), splits.test, "test")
      row.update(ema_test_loss=ema_test["loss"], ema_test_accuracy=ema_test["accuracy"])
    # The best checkpoint's test accuracy too (early stopping's answer), from the checkpoint itself.
    if best_state is not None:
      with clock("test"):
        best_test = evaluate_split(best_state, splits.test, "test")["accuracy"]
      row.update(best_checkpoint_step=best_step, best_checkpoint_test_accuracy=best_test)
    elif not earlier_best:  # this evaluation is the best (ties keep the later one)
      row.update(best_checkpoint_step=step, best_checkpoint_test_accuracy=test["accuracy"])
  with clock("metrics and TensorBoard"):
    run.writer.write(row)
  run.row = row
  logging.info("%sepoch %d: train_loss %.4f train_acc %.4f val_loss %.4f val_acc %.4f%s%s",
               run.label, epoch + 1, row["train_loss"], row["train_accuracy"], row["val_loss"], row["val_accuracy"],
               f" ema_val_acc {row['ema_val_accuracy']:.4f}" if "ema_val_accuracy" in row else "",
               f" test_acc {row['test_accuracy']:.4f}" if "test_accuracy" in row else "")
  # Checkpoint after the metrics line: a run killed in between redoes this epoch and rewrites the line.
  with clock("checkpoints"):
    run.ckpts.save(step, state, val_accuracy=val["accuracy"], best_so_far=best_val)
  if stopping:
    rundir.write_json(run.workdir, rundir.EARLY_STOP_FILE, {"epoch": epoch + 1, "step": step,
                                                            "patience": run.patience,
                                                            "best_epoch": epoch + 1 - since_best})
    logging.info("%sEarly stop at epoch %d: no better validation accuracy for %d evaluation(s) "
                 "(config.early_stopping_patience=%d).", run.label, epoch + 1, since_best, run.patience)
  return "stopped" if stopping else "evaluated"


def record_divergence(run: Run, e: NonFiniteLossError) -> None:
  """Files where a run diverged (diverged.json, the doctor's `diverged`) and lets the doctor report it."""
  rundir.write_json(run.workdir, rundir.DIVERGED_FILE, {"step": e.step, "lr": float(run.schedule(e.step)),
                                                        "last_good_step": run.ckpts.latest_step()})
  run_doctor(run.config, run.workdir)


def close(run: Run, clock: train_loop.WallTime) -> None:
  with clock("metrics and TensorBoard"):
    if run.writer is not None:
      run.writer.close()
  with clock("checkpoints"):
    run.ckpts.close()


def summary(workdir: str, clock: train_loop.WallTime) -> None:
  """The end-of-run lines: best epoch and accuracy, test accuracy of the last and the best checkpoint, wall time
  of this process, where the report and the checkpoints are; where the time went (timing.json)."""
  rows = rundir.read_metrics(workdir)
  if not rows or jax.process_index() != 0:
    return
  rundir.write_json(workdir, rundir.TIMING_FILE, clock.as_dict())
  logging.info("Wall time of this process (%s/%s): %s", workdir, rundir.TIMING_FILE, clock.line())
  best, last = max(rows, key=lambda r: (r["val_accuracy"], r["step"])), rows[-1]
  tests = ""
  if "test_accuracy" in last:
    tests = f"; test {last['test_accuracy']:.4f} (last checkpoint)"
    if "best_checkpoint_test_accuracy" in last:
      tests += f", {last['best_checkpoint_test_accuracy']:.4f} (best)"
  if "ema_val_accuracy" in last:
    tests += (f"; moving-average weights: validation {last['ema_val_accuracy']:.4f}"
              + (f", test {last['ema_test_accuracy']:.4f}" if "ema_test_accuracy" in last else ""))
  logging.info("Done: best validation accuracy %.4f at epoch %d of %d%s; %s this process. Report %s/report.md, "
               "checkpoints %s/checkpoints (best, latest).", best["val_accuracy"], best["epoch"], last["epoch"],
               tests, train_loop.format_duration(time.perf_counter() - clock.start), workdir, workdir)


def run_doctor(config, workdir: str) -> None:
  """Every run ends with the doctor's diagnosis.json, report.md and plots/ (config.doctor)."""
  if not config.doctor or jax.process_index() != 0:
    return
  result = doctor.examine(workdir)
  logging.info("Doctor: %s. Report: %s/report.md", doctor.summary(result), workdir)
