"""`train_and_evaluate(config, workdir)`: the training loop around the pmapped steps of `steps.py`.

Data in, run directory out: loads the splits, builds model, optimizer and state, resumes from the latest
checkpoint, trains with a progress line, evaluates validation each epoch (test once, at the end), writes
metrics.jsonl and checkpoints, and stops cleanly on a NaN. This module holds the loop of one run and the
choice of its step path (per-step host batches or fused chunks on a device-resident split); what a run
directory goes through around the loop (opening, each epoch's end, closing) is `training_run.py`'s, shared
with `population.py`.
"""

from __future__ import annotations

import contextlib

from absl import logging
import jax

from cnn_val import config_check, parallel, rundir, steps, train_loop, training_run
from cnn_val.data import pipeline
# The errors a run stops with (training_run.py) are this module's names too, as they always were.
from cnn_val.training_run import NonFiniteLossError, TrainingInterrupted


# Device-resident training data: at most this share of a device's memory (where the device reports it), or
# DEVICE_DATA_MAX_BYTES where it does not (host CPU devices share the host's memory).
DEVICE_DATA_MAX_FRACTION = 0.25
DEVICE_DATA_MAX_BYTES = 2 << 30


def device_data_fits(train_arrays: dict, devices) -> tuple[bool, str]:
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
  fits, why = device_data_fits(train_arrays, devices)
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
  data = training_run.load(config, devices, cpu_devices, clock)
  train_arrays, num_classes = data.train_arrays, data.num_classes
  run = training_run.open_run(config, workdir, data, clock)
  try:
    pmapped = steps.pmapped_steps(config, num_classes, run.tx, devices, **data.loss_terms)
    p_train, p_eval = pmapped.train, pmapped.eval
    chunk = steps_per_call(config, train_arrays, devices)
    if chunk > 1:  # the training split on the device, K steps per host call
      p_chunk = steps.pmapped_train_chunk(config, num_classes, run.tx, devices, **data.loss_terms)
      with clock("training split to the device"):
        device_data = parallel.replicate({"image": train_arrays["image"], "label": train_arrays["label"]}, devices)
      logging.info("Training split held on the device; %d train steps per host call.", chunk)
    logging.info("Per-device batch %d in micro-batches of %d; %s computation; conv %s, pool %s.",
                 config.batch_size // (num_devices * jax.process_count()), pmapped.micro_batch_size,
                 config.dtype, pmapped.model.conv_impl, getattr(pmapped.model, "pool_impl", "-"))
    evaluator = training_run.Evaluator(p_eval, data, config, devices)
    progress = train_loop.Progress(config, data.total_steps, run.schedule, writer=run.writer,
                                   check=lambda sums, step: training_run.check_finite(sums, step, workdir, run.ckpts))
    step = run.start_step
    profiler = train_loop.Profiler(workdir, config.get("profile_steps", 0), run.start_step)

    def _interrupt(signum, at_step):
      raise TrainingInterrupted(signum, at_step, workdir, run.ckpts.latest_step())

    try:
      for epoch in run.epochs_left:
        order = dict(global_batch=config.batch_size, num_devices=num_devices, seed=config.seed, epoch=epoch,
                     num_classes=num_classes, resampling=config.imbalance.resampling)
        if chunk > 1:
          calls = train_loop.chunk_calls(p_chunk, device_data, pipeline.train_indices(train_arrays["label"], **order),
                                         run.dropout_key, chunk)
        else:
          calls = train_loop.step_calls(p_train, pipeline.train_batches(train_arrays, **order), run.dropout_key)
        with clock("train steps"):
          run.state, step, train = train_loop.train_epoch(
              calls, run.state, step=step, epoch=epoch + 1, progress=progress, stop=stop, on_stop=_interrupt,
              profiler=profiler, clock=clock)
        training_run.check_finite(train, step, workdir, run.ckpts)
        outcome = training_run.end_of_epoch(run, evaluator, train, step, epoch, clock)
        if outcome == "stopped":
          break
        if outcome == "evaluated":
          progress.restart(step)  # evaluation time is not training throughput
    except NonFiniteLossError as e:  # the doctor reads this (cause `diverged`)
      training_run.record_divergence(run, e)
      raise
    finally:
      profiler.close()
  finally:
    training_run.close(run, clock)
  with clock("doctor"):
    training_run.run_doctor(config, workdir)
  training_run.summary(workdir, clock)
  return run.row
