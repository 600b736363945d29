"""Training and evaluation: the state, the per-device step functions and `train_and_evaluate(config, workdir)`.

The steps are pure top-level functions of (state, batch, key) with the model and optimizer bound by
`functools.partial`; `parallel.pmap_step` wraps them once. Inside a step, gradients, BatchNorm statistics and
metric sums are reduced over `parallel.AXIS`, so the state leaves the step identical on every device.
"""

from __future__ import annotations

import functools
import time
from typing import Any

from absl import logging
import flax
import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
import optax

from cnn_val import checkpoint, config_check, models, optim, parallel, rundir
from cnn_val.data import pipeline, sources


class NonFiniteLossError(FloatingPointError):
  """The loss or gradient became NaN/Inf; the last good checkpoint is kept."""


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any


def create_train_state(model, tx, key, image_shape) -> TrainState:
  """Initialises the model (outside pmap: build it with axis_name=None) and the optimizer state."""
  variables = model.init({"params": key}, jnp.zeros((1,) + tuple(image_shape), jnp.float32), train=False)
  params = variables["params"]
  return TrainState(step=jnp.asarray(0, jnp.int32), params=params,
                    batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(params))


def _variables(state: TrainState, params=None) -> dict:
  variables = {"params": state.params if params is None else params}
  if state.batch_stats:
    variables["batch_stats"] = state.batch_stats
  return variables


def _to_float(images):
  return images.astype(jnp.float32) / 255.0


def train_step(state: TrainState, batch, key, *, model, tx):
  """One optimizer step on this device's part of the global batch; returns (new_state, metric sums)."""
  images, labels = _to_float(batch["image"]), batch["label"]
  local = labels.shape[0]
  # Global index of each example in the batch: dropout masks depend on it, not on the device layout.
  example_ids = lax.axis_index(parallel.AXIS) * local + jnp.arange(local)
  step_key = jax.random.fold_in(key, state.step)

  def loss_fn(params):
    logits, updates = model.apply(
        _variables(state, params), images, train=True, example_ids=example_ids,
        rngs={"dropout": step_key}, mutable=["batch_stats"])
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return loss, (logits, updates)

  (loss, (logits, updates)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  grads = lax.pmean(grads, parallel.AXIS)
  loss = lax.pmean(loss, parallel.AXIS)
  grad_norm = optax.global_norm(grads)
  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)

  param_updates, opt_state = tx.update(grads, state.opt_state, state.params)
  new_state = state.replace(
      step=state.step + 1,
      params=optax.apply_updates(state.params, param_updates),
      batch_stats=lax.pmean(updates.get("batch_stats", {}), parallel.AXIS),
      opt_state=opt_state)
  # A non-finite step changes nothing, so the state the host finds after a NaN is the last good one.
  new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state, state)

  correct = jnp.sum(jnp.argmax(logits, -1) == labels)
  metrics = {
      "loss_sum": loss * labels.shape[0] * lax.psum(1, parallel.AXIS),
      "correct": lax.psum(correct, parallel.AXIS),
      "count": lax.psum(local, parallel.AXIS),
      "grad_norm_sum": grad_norm,
      "steps": jnp.asarray(1),
      "nonfinite_steps": (~finite).astype(jnp.int32),
  }
  return new_state, metrics


def eval_step(state: TrainState, batch, *, model, num_classes: int):
  """Masked metric sums over this device's batch, summed over devices; includes the confusion matrix."""
  logits = model.apply(_variables(state), _to_float(batch["image"]), train=False)
  labels, mask = batch["label"], batch["mask"]
  weights = mask.astype(jnp.float32)
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  preds = jnp.argmax(logits, -1)
  confusion = jnp.zeros((num_classes, num_classes), jnp.int32).at[labels, preds].add(mask.astype(jnp.int32))
  return lax.psum({
      "loss_sum": jnp.sum(losses * weights),
      "correct": jnp.sum((preds == labels) * weights),
      "count": jnp.sum(weights),
      "confusion": confusion,
  }, parallel.AXIS)


def _sum_metrics(metric_list) -> dict:
  host = jax.device_get(metric_list)
  return {k: np.sum([np.asarray(m[k]) for m in host], axis=0) for k in host[0]}


def evaluate(p_eval, state, ds, *, config, num_devices, num_classes, split_name) -> dict:
  batches = pipeline.eval_batches(ds, global_batch=config.eval_batch_size, num_devices=num_devices,
                                  num_classes=num_classes, split_name=split_name)
  sums = _sum_metrics([p_eval(state, batch) for batch in batches])
  confusion = sums["confusion"]
  support = confusion.sum(axis=1)
  with np.errstate(invalid="ignore", divide="ignore"):
    recall = np.where(support > 0, np.diag(confusion) / np.maximum(support, 1), np.nan)
  return {
      "loss": float(sums["loss_sum"] / sums["count"]),
      "accuracy": float(sums["correct"] / sums["count"]),
      "count": int(sums["count"]),
      "per_class_recall": [float(r) for r in recall],
      "pred_histogram": [int(c) for c in confusion.sum(axis=0)],
  }


def _format_duration(seconds: float) -> str:
  seconds = int(seconds)
  return f"{seconds // 3600}h{seconds // 60 % 60:02d}m{seconds % 60:02d}s" if seconds >= 3600 \
      else f"{seconds // 60}m{seconds % 60:02d}s"


def _check_finite(metrics, step: int, workdir: str, ckpts) -> None:
  if metrics["nonfinite_steps"]:
    last = ckpts.latest_step()
    kept = (f"the last good checkpoint (step {last}) is kept in {workdir}/checkpoints/latest"
            if last is not None else "no checkpoint had been written yet")
    raise NonFiniteLossError(
        f"Training stopped: the loss or gradient became NaN/Inf before step {step}; {kept}. This usually means "
        f"the learning rate is too high (config.optim.learning_rate) or the inputs are not normalised. Lower "
        f"the learning rate or set config.optim.grad_clip_norm, and start again in a new --workdir.")


def train_and_evaluate(config, workdir: str) -> dict:
  """Trains `config` in `workdir` (resuming from its latest checkpoint) and returns the final metrics row."""
  config_check.validate(config)
  devices = parallel.select_devices(config.num_devices)
  num_devices = len(devices)
  config_check.validate_batch_sizes(config, num_devices * jax.process_count())
  rundir.write_or_check_config(workdir, config)

  splits = sources.load_splits(config.data)
  steps_per_epoch = splits.num_train // config.batch_size
  if steps_per_epoch == 0:
    raise ValueError(f"config.batch_size={config.batch_size} exceeds the {splits.num_train} training "
                     f"examples; lower config.batch_size or raise config.data.max_train_examples.")
  total_steps = steps_per_epoch * config.num_epochs
  num_classes = splits.num_classes
  logging.info("Data %s: %d train, %d validation, %d test examples, %d classes, images %s; %d device(s).",
               config.data.name, splits.num_train, splits.num_validation, splits.num_test, num_classes,
               splits.image_shape, num_devices)

  schedule = optim.create_schedule(config.optim, steps_per_epoch, config.num_epochs)
  tx = optim.create_optimizer(config.optim, steps_per_epoch, config.num_epochs)
  init_key, dropout_key = jax.random.split(jax.random.key(config.seed))
  state = create_train_state(models.create_model(config.model, num_classes), tx, init_key, splits.image_shape)
  logging.info("Model %s: %d parameters.", config.model.name,
               sum(x.size for x in jax.tree.leaves(state.params)))

  ckpts = checkpoint.Checkpoints(workdir)
  restored = ckpts.restore_latest(state)
  if restored is not None:
    state = restored
    logging.info("Resuming from the checkpoint at step %d.", int(state.step))
  start_step = int(state.step)
  if start_step % steps_per_epoch:
    raise ValueError(f"The checkpoint in {workdir} is at step {start_step}, not an epoch boundary of "
                     f"{steps_per_epoch} steps: the data or batch size changed since it was written.")
  rundir.truncate_metrics(workdir, start_step)

  model = models.create_model(config.model, num_classes, axis_name=parallel.AXIS)
  p_train = parallel.pmap_step(functools.partial(train_step, model=model, tx=tx), devices,
                               batch_argnums=(1,), num_args=3)
  p_eval = parallel.pmap_step(functools.partial(eval_step, model=model, num_classes=num_classes), devices,
                              batch_argnums=(1,), num_args=2)
  eval_kw = dict(config=config, num_devices=num_devices, num_classes=num_classes)
  writer = rundir.MetricsWriter(workdir)
  row = rundir.read_metrics(workdir)[-1] if start_step == total_steps and start_step else {}

  try:
    step = start_step
    t_log, step_log = time.perf_counter(), step
    for epoch in range(start_step // steps_per_epoch, config.num_epochs):
      epoch_metrics, log_metrics = [], []
      for batch in pipeline.train_batches(
          splits.train, global_batch=config.batch_size, num_devices=num_devices, num_classes=num_classes,
          seed=config.seed, epoch=epoch, shuffle_buffer=config.data.shuffle_buffer):
        state, metrics = p_train(state, batch, dropout_key)
        step += 1
        log_metrics.append(metrics)
        if step % config.log_every_steps == 0:
          sums = _sum_metrics(log_metrics)
          epoch_metrics.append(sums)
          log_metrics = []
          _check_finite(sums, step, workdir, ckpts)
          now = time.perf_counter()
          rate = (step - step_log) * config.batch_size / (now - t_log)
          eta = (total_steps - step) * config.batch_size / rate
          logging.info("step %d/%d  epoch %d/%d  loss %.4f  acc %.4f  lr %.3g  %.0f img/s  ETA %s",
                       step, total_steps, epoch + 1, config.num_epochs, sums["loss_sum"] / sums["count"],
                       sums["correct"] / sums["count"], schedule(step), rate, _format_duration(eta))
          t_log, step_log = now, step
      if log_metrics:
        epoch_metrics.append(_sum_metrics(log_metrics))
      train = {k: sum(m[k] for m in epoch_metrics) for k in epoch_metrics[0]}
      _check_finite(train, step, workdir, ckpts)

      last_epoch = epoch + 1 == config.num_epochs
      if not last_epoch and (epoch + 1) % config.eval_every_epochs:
        continue
      val = evaluate(p_eval, state, splits.validation, split_name="validation", **eval_kw)
      row = {
          "step": step, "epoch": epoch + 1, "lr": float(schedule(step)),
          "train_loss": float(train["loss_sum"] / train["count"]),
          "train_accuracy": float(train["correct"] / train["count"]),
          "grad_norm": float(train["grad_norm_sum"] / train["steps"]),
          "val_loss": val["loss"], "val_accuracy": val["accuracy"],
          "val_per_class_recall": val["per_class_recall"], "val_pred_histogram": val["pred_histogram"],
      }
      if last_epoch and splits.test is not None:
        test = evaluate(p_eval, state, splits.test, split_name="test", **eval_kw)
        row.update(test_loss=test["loss"], test_accuracy=test["accuracy"])
      writer.write(row)
      logging.info("epoch %d: train_loss %.4f train_acc %.4f val_loss %.4f val_acc %.4f%s", epoch + 1,
                   row["train_loss"], row["train_accuracy"], row["val_loss"], row["val_accuracy"],
                   f" test_acc {row['test_accuracy']:.4f}" if "test_accuracy" in row else "")
      # Checkpoint after the metrics line: a run killed in between redoes this epoch and rewrites the line.
      ckpts.save(step, state, val_accuracy=val["accuracy"])
      t_log, step_log = time.perf_counter(), step  # evaluation time is not training throughput
  finally:
    writer.close()
    ckpts.close()
  return row
