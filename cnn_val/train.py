"""`train_and_evaluate(config, workdir)`: the training loop around the pmapped steps of `steps.py`.

Data in, run directory out: loads the splits, builds model, optimizer and state, resumes from the latest
checkpoint, trains with a progress line, evaluates validation each epoch (test once, at the end), writes
metrics.jsonl and checkpoints, and stops cleanly on a NaN.
"""

from __future__ import annotations

import contextlib
import functools
import signal
import time

from absl import logging
import jax
import numpy as np

from cnn_val import (audit, augment, checkpoint, config_check, doctor, metrics, models, optim, parallel,
                     preflight, rundir, steps, train_loop)
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


def _train_probe(train_arrays: dict, examples: int):
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


def write_train_predictions(workdir: str, p_predict, state, train_arrays: dict, **eval_kw) -> str:
  """`train_predictions.npz`: every training example's softmax outputs (float16) with `state`, its label and
  index in the training split as loaded (the doctor's label check; about one forward pass over the split)."""
  probs = predict(p_predict, state, train_arrays, **eval_kw)
  return rundir.write_npz(workdir, rundir.TRAIN_PREDICTIONS_FILE, probs=probs.astype(np.float16),
                          labels=train_arrays["label"].astype(np.int32), index=np.arange(len(probs)))


def _check_finite(sums, step: int, workdir: str, ckpts) -> None:
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


# Device-resident training data: at most this share of a device's memory (where the device reports it), or
# DEVICE_DATA_MAX_BYTES where it does not (host CPU devices share the host's memory).
DEVICE_DATA_MAX_FRACTION = 0.25
DEVICE_DATA_MAX_BYTES = 2 << 30


def _device_data_fits(train_arrays: dict, devices) -> tuple[bool, str]:
  nbytes = sum(v.nbytes for v in train_arrays.values())
  stats = devices[0].memory_stats() if hasattr(devices[0], "memory_stats") else None
  limit = (DEVICE_DATA_MAX_FRACTION * stats["bytes_limit"] if stats and stats.get("bytes_limit")
           else DEVICE_DATA_MAX_BYTES)
  return nbytes <= limit, f"{nbytes / 2**20:.0f} MiB against {limit / 2**20:.0f} MiB allowed per device"


# config.steps_per_call=0 (auto): fused chunks of this many steps where the training split fits on the device.
AUTO_STEPS_PER_CALL = 50


def steps_per_call(config, train_arrays: dict, devices) -> int:
  """Train steps per host call: 1 = the per-step loop over host batches; K > 1 = fused chunks of K steps over
  the training split held on the device (`config.steps_per_call`; 0 = auto: AUTO_STEPS_PER_CALL when the
  split fits, else 1). An explicit K > 1 whose split does not fit falls back to 1 with a warning."""
  requested = int(config.get("steps_per_call", 1))
  if requested == 1:
    return 1
  if jax.process_count() > 1:  # the device-resident split is one process's; several train step by step
    if requested > 1:
      logging.warning("config.steps_per_call=%d: fused chunks run in one process only; this run of %d processes "
                      "trains step by step.", requested, jax.process_count())
    return 1
  fits, why = _device_data_fits(train_arrays, devices)
  if not fits:
    if requested > 1:
      logging.warning("config.steps_per_call=%d needs the training split on the device, which does not fit "
                      "(%s): training step by step from host batches instead.", requested, why)
    return 1
  return requested or AUTO_STEPS_PER_CALL


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains `config` in `workdir` (resuming from its latest checkpoint) and returns the final metrics row."""
  cpu_devices = parallel.use_cpu_devices(config)  # before JAX's first operation, which fixes its devices
  config_check.validate(config)
  devices = parallel.select_devices(config.num_devices)
  num_devices = len(devices)
  config_check.validate_batch_sizes(config, num_devices * jax.process_count())
  # One training process per run directory (process 0 of a multi-host job holds it for all hosts).
  lock = rundir.run_lock(workdir) if jax.process_index() == 0 else contextlib.nullcontext()
  with lock, train_loop.StopOnSignal() as stop:
    return _train(config, workdir, devices, cpu_devices, stop)


def _train(config, workdir: str, devices, cpu_devices, stop: train_loop.StopOnSignal) -> dict:
  clock = train_loop.WallTime()
  num_devices = len(devices)
  rundir.write_or_check_config(workdir, config)

  with clock("load data"):
    splits, arrays = loading.load_data(config)
  train_arrays = arrays["train"]
  num_classes = splits.num_classes
  augment.check_channels(augment.from_config(config.augment), splits.image_shape[-1])
  if jax.process_index() == 0 and rundir.read_json(workdir, rundir.AUDIT_FILE) is None:  # once per run
    with clock("audit"):
      report = audit.cached_audit(arrays, num_classes, splits.class_names)  # shared by a sweep's runs
    rundir.write_json(workdir, rundir.AUDIT_FILE, report)
    logging.info("Dataset audit written to %s/%s (%.1f s).", workdir, rundir.AUDIT_FILE, report["seconds"])
  counts = balance.class_counts(train_arrays["label"], num_classes)
  missing = [c for c in range(num_classes) if counts[c] == 0]
  if missing:  # trained anyway (an open-set evaluation may mean it); the doctor makes it a finding
    val_counts = balance.class_counts(arrays["validation"]["label"], num_classes)
    logging.warning("No training images for class(es) %s (validation holds %s of them): the model cannot learn "
                    "them. Add training images, or remove the class from validation and test; the doctor reports "
                    "it as missing_class.", ", ".join(f"{c} ({splits.class_names[c]})" if splits.class_names else
                                                      str(c) for c in missing),
                    ", ".join(str(int(val_counts[c])) for c in missing))
  resampling = config.imbalance.resampling
  epoch_examples = balance.epoch_size(counts, resampling)
  class_weights = balance.class_weights(counts, config.imbalance.class_weighting, config.imbalance.beta)
  steps_per_epoch = epoch_examples // config.batch_size
  if steps_per_epoch == 0:
    raise ValueError(f"config.batch_size={config.batch_size} exceeds the {epoch_examples} training "
                     f"examples per epoch; lower config.batch_size or raise config.data.max_train_examples.")
  total_steps = steps_per_epoch * config.num_epochs
  logging.info("Data %s: %d train (%d per epoch, resampling %s), %d validation, %d test examples, %d classes, "
               "images %s; %d %s device(s)%s.", config.data.name, splits.num_train, epoch_examples, resampling,
               splits.num_validation, splits.num_test, num_classes, splits.image_shape, num_devices,
               devices[0].platform, "" if cpu_devices is None else f" (config.cpu_devices -> {cpu_devices} CPU)")
  if class_weights is not None:
    logging.info("Class weights (%s): %s", config.imbalance.class_weighting, np.round(class_weights, 3).tolist())

  schedule = optim.create_schedule(config.optim, steps_per_epoch, config.num_epochs)
  tx = optim.create_optimizer(config.optim, steps_per_epoch, config.num_epochs)
  init_key, dropout_key = jax.random.split(jax.random.key(config.seed))
  with clock("model and optimizer init"):
    state = steps.create_train_state(
        models.create_model(config.model, num_classes, class_prior=counts), tx, init_key, splits.image_shape,
        ema=config.get("ema_decay", 0.0) > 0)
  logging.info("Model %s: %d parameters.", config.model.name,
               sum(x.size for x in jax.tree.leaves(state.params)))

  ckpts = checkpoint.Checkpoints(workdir, cleanup=True)  # this process holds the run's lock
  recorded = rundir.read_metrics(workdir)
  with clock("checkpoints"):
    restored = ckpts.restore_latest(state, max_step=recorded[-1]["step"] if recorded else 0)
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
    raise ValueError(f"The checkpoint in {workdir} is at step {start_step}, not an epoch boundary of "
                     f"{steps_per_epoch} steps: the data or batch size changed since it was written.")
  history = rundir.truncate_metrics(workdir, start_step, recorded)

  if (config.preflight and start_step == 0 and jax.process_index() == 0
      and rundir.read_json(workdir, rundir.PREFLIGHT_FILE) is None):
    with clock("pre-flight checks"):
      checks = preflight.run_checks(config, arrays, num_classes, splits.image_shape)
    rundir.write_json(workdir, rundir.PREFLIGHT_FILE, checks)
    failed = [c["message"] for c in checks["checks"] if not c["passed"]]
    logging.log(logging.WARNING if failed else logging.INFO, "Pre-flight checks (%.1f s): %s", checks["seconds"],
                "; ".join(failed) if failed else "all passed")

  pmapped = steps.pmapped_steps(
      config, num_classes, tx, devices,
      class_weights=None if class_weights is None else tuple(float(w) for w in class_weights))
  p_train, p_eval = pmapped.train, pmapped.eval
  chunk = steps_per_call(config, train_arrays, devices)
  if chunk > 1:  # the training split on the device, K steps per host call
    p_chunk = steps.pmapped_train_chunk(
        config, num_classes, tx, devices,
        class_weights=None if class_weights is None else tuple(float(w) for w in class_weights))
    with clock("training split to the device"):
      device_data = parallel.replicate({"image": train_arrays["image"], "label": train_arrays["label"]}, devices)
    logging.info("Training split held on the device; %d train steps per host call.", chunk)
  logging.info("Per-device batch %d in micro-batches of %d; %s computation; conv %s, pool %s.",
               config.batch_size // (num_devices * jax.process_count()), pmapped.micro_batch_size,
               config.dtype, pmapped.model.conv_impl, getattr(pmapped.model, "pool_impl", "-"))
  eval_kw = dict(config=config, num_devices=num_devices, num_classes=num_classes)
  train_probe = _train_probe(train_arrays, config.get("train_eval_examples", 0))
  writer = rundir.MetricsWriter(workdir)
  if start_step == 0:  # TensorBoard's HParams view: the config beside the metrics, once per run
    writer.hparams(rundir.config_to_dict(config))
  patience = int(config.get("early_stopping_patience", 0))
  stopped = rundir.read_json(workdir, rundir.EARLY_STOP_FILE)  # a run that stopped early is finished
  if stopped is not None and stopped.get("step") != start_step:
    stopped = None  # its checkpoint was lost (a fallback to an earlier one): the epochs after are redone
  row = history[-1] if (start_step == total_steps or stopped) and start_step else {}
  val_history = [r["val_accuracy"] for r in history]

  progress = train_loop.Progress(config, total_steps, schedule,
                       check=lambda sums, step: _check_finite(sums, step, workdir, ckpts), writer=writer)
  step = start_step
  profiler = train_loop.Profiler(workdir, config.get("profile_steps", 0), start_step)

  def _interrupt(signum, at_step):
    raise TrainingInterrupted(signum, at_step, workdir, ckpts.latest_step())

  try:
    for epoch in range(start_step // steps_per_epoch, config.num_epochs if stopped is None else 0):
      order = dict(global_batch=config.batch_size, num_devices=num_devices, seed=config.seed, epoch=epoch,
                   num_classes=num_classes, resampling=resampling)
      if chunk > 1:
        calls = train_loop.chunk_calls(p_chunk, device_data, pipeline.train_indices(train_arrays["label"], **order),
                                       dropout_key, chunk)
      else:
        calls = train_loop.step_calls(p_train, pipeline.train_batches(train_arrays, **order), dropout_key)
      with clock("train steps"):
        state, step, train = train_loop.train_epoch(calls, state, step=step, epoch=epoch + 1, progress=progress,
                                          stop=stop, on_stop=_interrupt, profiler=profiler, clock=clock)
      _check_finite(train, step, workdir, ckpts)

      last_epoch = epoch + 1 == config.num_epochs
      if not last_epoch and (epoch + 1) % config.eval_every_epochs:
        continue
      with clock("validation"):
        val = evaluate(p_eval, state, splits.validation, split_name="validation", **eval_kw)
      best_val = max(val_history, default=None)  # before this evaluation
      val_history.append(val["accuracy"])
      since_best = len(val_history) - 1 - val_history.index(max(val_history))  # a tie is no improvement
      stopping = bool(patience) and not last_epoch and since_best >= patience
      last_epoch = last_epoch or stopping  # an early stop is the run's last evaluation: test metrics too
      row = {
          "step": step, "epoch": epoch + 1, "lr": float(schedule(step)),
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
          ema_val = evaluate(p_eval, steps.ema_weights(state), splits.validation, split_name="validation", **eval_kw)
        row.update(ema_val_loss=ema_val["loss"], ema_val_accuracy=ema_val["accuracy"])
      if train_probe is not None:  # training accuracy measured like validation's (the doctor compares them)
        with clock("training probe"):
          probe = evaluate(p_eval, state, train_probe, split_name="train", **eval_kw)
        row.update(train_eval_loss=probe["loss"], train_eval_accuracy=probe["accuracy"])
      if last_epoch and jax.process_count() == 1:  # the doctor's label check (cleanlab) reads these
        with clock("training predictions"):
          write_train_predictions(workdir, steps.pmapped_predict(config, num_classes, devices), state,
                                  train_arrays, **eval_kw)
      if last_epoch or best_val is None or val["accuracy"] >= best_val:  # the best and the last evaluation
        row["val_confusion"] = val["confusion"]
      if last_epoch and splits.test is not None:
        with clock("test"):
          test = evaluate(p_eval, state, splits.test, split_name="test", **eval_kw)
        row.update(test_loss=test["loss"], test_accuracy=test["accuracy"])
        if state.ema is not None:
          with clock("test"):
            ema_test = evaluate(p_eval, steps.ema_weights(state), splits.test, split_name="test", **eval_kw)
          row.update(ema_test_loss=ema_test["loss"], ema_test_accuracy=ema_test["accuracy"])
        # The best checkpoint's test accuracy too (early stopping's answer), from the checkpoint itself.
        if best_val is not None and val["accuracy"] < best_val:
          with clock("test"):
            best_state = ckpts.restore_best(state)
            best_test = evaluate(p_eval, best_state, splits.test, split_name="test", **eval_kw)["accuracy"]
          row.update(best_checkpoint_step=int(ckpts.best.best_step()), best_checkpoint_test_accuracy=best_test)
        else:  # this evaluation is the best (ties keep the later one)
          row.update(best_checkpoint_step=step, best_checkpoint_test_accuracy=test["accuracy"])
      with clock("metrics and TensorBoard"):
        writer.write(row)
      logging.info("epoch %d: train_loss %.4f train_acc %.4f val_loss %.4f val_acc %.4f%s%s", epoch + 1,
                   row["train_loss"], row["train_accuracy"], row["val_loss"], row["val_accuracy"],
                   f" ema_val_acc {row['ema_val_accuracy']:.4f}" if "ema_val_accuracy" in row else "",
                   f" test_acc {row['test_accuracy']:.4f}" if "test_accuracy" in row else "")
      # Checkpoint after the metrics line: a run killed in between redoes this epoch and rewrites the line.
      with clock("checkpoints"):
        ckpts.save(step, state, val_accuracy=val["accuracy"], best_so_far=best_val)
      progress.restart(step)  # evaluation time is not training throughput
      if stopping:
        rundir.write_json(workdir, rundir.EARLY_STOP_FILE, {"epoch": epoch + 1, "step": step, "patience": patience,
                                                            "best_epoch": epoch + 1 - since_best})
        logging.info("Early stop at epoch %d: no better validation accuracy for %d evaluation(s) "
                     "(config.early_stopping_patience=%d).", epoch + 1, since_best, patience)
        break
  except NonFiniteLossError as e:  # the doctor reads this (cause `diverged`)
    rundir.write_json(workdir, rundir.DIVERGED_FILE, {"step": e.step, "lr": float(schedule(e.step)),
                                                     "last_good_step": ckpts.latest_step()})
    _doctor(config, workdir)
    raise
  finally:
    profiler.close()
    with clock("metrics and TensorBoard"):
      writer.close()
    with clock("checkpoints"):
      ckpts.close()
  with clock("doctor"):
    _doctor(config, workdir)
  _summary(workdir, clock)
  return row


def _summary(workdir: str, clock: train_loop.WallTime) -> None:
  """The end-of-run lines: best epoch and accuracy, test accuracy of the last and the best checkpoint, wall time
  of this process, where the report and the checkpoints are; where the time went (timing.json)."""
  rows = rundir.read_metrics(workdir)
  if not rows or jax.process_index() != 0:
    return
  rundir.write_json(workdir, rundir.TIMING_FILE, clock.as_dict())
  logging.info("Wall time of this process (%s/%s): %s", workdir, rundir.TIMING_FILE, clock.line())
  best, last = max(rows, key=lambda r: (r["val_accuracy"], r["step"])), rows[-1]
  tests = (f"; test {last['test_accuracy']:.4f} (last checkpoint), "
           f"{last.get('best_checkpoint_test_accuracy', last['test_accuracy']):.4f} (best)"
           if "test_accuracy" in last else "")
  if "ema_val_accuracy" in last:
    tests += (f"; moving-average weights: validation {last['ema_val_accuracy']:.4f}"
              + (f", test {last['ema_test_accuracy']:.4f}" if "ema_test_accuracy" in last else ""))
  logging.info("Done: best validation accuracy %.4f at epoch %d of %d%s; %s this process. Report %s/report.md, "
               "checkpoints %s/checkpoints (best, latest).", best["val_accuracy"], best["epoch"], last["epoch"],
               tests, train_loop.format_duration(time.perf_counter() - clock.start), workdir, workdir)


def _doctor(config, workdir: str) -> None:
  """Every run ends with the doctor's diagnosis.json, report.md and plots/ (config.doctor)."""
  if not config.doctor or jax.process_index() != 0:
    return
  result = doctor.examine(workdir)
  logging.info("Doctor: %s. Report: %s/report.md", doctor.summary(result), workdir)
