"""LR range test: train from a fresh initialisation while the learning rate grows exponentially, and
suggest a rate from where the loss falls fastest (`lr_find.json`, `plots/lr_find.png`).

The run uses the config's own model, optimizer, batches and augmentation; only the learning rate is swept
(from MIN_LR to MAX_LR over `num_steps` steps; the optimizer's update is scaled by the sweep). It stops at
the first non-finite loss or once the loss's moving average exceeds DIVERGE_FACTOR x its minimum.

`suggest` is built against the two ways the well-known finders fail: a NaN/Inf (they plot and pick through
it) and early spikes at tiny rates (they pick the steepest drop anywhere, often a noise spike). It cuts
the curve at the first non-finite value, smooths with a centred moving average (no lag), skips
the first SKIP_START of the steps, finds the minimum of the smoothed loss, and takes the rate of the
steepest descent (in log-rate) before that minimum, kept within [min-loss rate / 30, min-loss rate / 3]
(STEEPEST_BELOW_MIN); with no clear descent there it falls back to the min-loss rate / 10. The window was
/ 100 before: on BatchNorm networks, whose loss falls slowly over three decades of rate, the steepest point lay
at 1/65 and 1/93 of the minimum on two of three seeds (the BatchNorm ConvNet of configs/fashion_mnist_bn.py:
1.6e-4 and 1.2e-4 suggested, for a recipe that trains well at 2e-3; 4.2e-3 on the third), while the seed models'
steepest points, where used, lay at 1/4 to 1/28 of it (`python -m benchmarks.lr_range`, README).

`sweep` runs on data already loaded (a training run's own LR range test, `config.lr_range_test`, before its
first epoch); `lr_range_test` loads the config's data and writes the files (`python -m cnn_val.lr_find`).
"""

from __future__ import annotations

import itertools
import math
import time

from absl import logging
import jax
import numpy as np
import optax

from cnn_val import config_fields, models, optim, rundir, steps

MIN_LR, MAX_LR = 1e-7, 10.0
SMOOTHING = 0.98
SKIP_START = 0.1
DIVERGE_FACTOR = 4.0
STEEPEST_BELOW_MIN = (30.0, 3.0)  # the steepest descent counts between min-loss rate / 30 and / 3


def ema(losses) -> np.ndarray:
  """Bias-corrected exponential moving average: the online stopping rule's view of the loss."""
  out, avg = [], 0.0
  for i, loss in enumerate(np.asarray(losses, float)):
    avg = SMOOTHING * avg + (1 - SMOOTHING) * loss
    out.append(avg / (1 - SMOOTHING ** (i + 1)))
  return np.asarray(out)


def smooth(losses) -> np.ndarray:
  """Centred moving average over ~5% of the steps (no lag, unlike the EMA, which shifts a 200-step curve
  by most of a decade of learning rate); shorter windows at the ends."""
  losses = np.asarray(losses, float)
  half = max(2, len(losses) // 40)
  cumulative = np.concatenate([[0.0], np.cumsum(losses)])
  lo = np.maximum(np.arange(len(losses)) - half, 0)
  hi = np.minimum(np.arange(len(losses)) + half + 1, len(losses))
  return (cumulative[hi] - cumulative[lo]) / (hi - lo)


def suggest(lrs, losses) -> dict:
  """The suggested learning rate and how it was found, from a sweep's rates and raw losses."""
  lrs, losses = np.asarray(lrs, float), np.asarray(losses, float)
  finite = np.isfinite(losses)
  end = len(losses) if finite.all() else int(np.argmin(finite))  # cut at the first NaN/Inf
  lrs, losses = lrs[:end], losses[:end]
  result = {"suggestion": None, "lr_at_min_loss": None, "steepest": None, "method": "none",
            "usable_steps": int(end)}
  if end < 10:
    return result
  smoothed = smooth(losses)
  start = max(1, int(SKIP_START * end))
  i_min = start + int(np.argmin(smoothed[start:]))
  lr_min = float(lrs[i_min])
  result["lr_at_min_loss"] = lr_min
  if i_min - start >= 5:
    slope = np.gradient(smoothed[start:i_min + 1], np.log(lrs[start:i_min + 1]))
    steepest = float(lrs[start + int(np.argmin(slope))])
    result["steepest"] = steepest
    lowest, highest = (lr_min / factor for factor in STEEPEST_BELOW_MIN)
    if lowest <= steepest <= highest and slope.min() < 0:
      result.update(suggestion=steepest, method="steepest descent before the minimum")
      return result
  result.update(suggestion=lr_min / 10, method="min-loss rate / 10")
  return result


def lr_range_test(config, workdir: str, *, num_steps: int = 200) -> dict:
  """Runs the sweep for `config` on 1 device and writes lr_find.json and plots/lr_find.png to `workdir`."""
  from cnn_val.data import loading  # pylint: disable=import-outside-toplevel  (the data sources)
  from cnn_val.doctor import report  # pylint: disable=import-outside-toplevel  (matplotlib)
  start_time = time.perf_counter()
  splits, arrays = loading.load_data(config)
  result = sweep(config, arrays, splits.num_classes, splits.image_shape, num_steps=num_steps)
  result["seconds"] = round(time.perf_counter() - start_time, 1)
  rundir.write_json(workdir, rundir.LR_FIND_FILE, result)
  report.plot_lr_find(workdir, result)
  return result


def sweep(config, arrays: dict, num_classes: int, image_shape, *, num_steps: int = 200) -> dict:
  """The sweep for `config` on loaded `arrays` (1 device, a fresh initialisation from config.seed): lr_find.json's
  contents (the rates, raw and smoothed losses, the suggestion and how it was found, why it stopped, and the
  config fields the sweep depends on, `config_fields.swept_config`, so that a test of another config is not read as this
  run's: `config_fields.lr_find_mismatch`)."""
  start_time = time.perf_counter()
  rate = lambda step: MIN_LR * (MAX_LR / MIN_LR) ** (step / max(num_steps - 1, 1))
  unit = config.copy_and_resolve_references()
  unit.optim.learning_rate, unit.optim.schedule = 1.0, "constant"
  tx = optax.chain(optim.create_optimizer(unit.optim, num_steps, 1), optax.scale_by_schedule(rate))
  devices = jax.local_devices()[:1]  # this process alone: in a multi-process run only process 0 sweeps
  state = steps.create_train_state(models.create_model(config.model, num_classes), tx,
                                   jax.random.key(config.seed), image_shape)
  p_train = steps.pmapped_steps(config, num_classes, tx, devices, across_processes=False).train
  key = jax.random.key(config.seed + 1)
  lrs, losses, best, reason = [], [], math.inf, "end of sweep"
  for batch in itertools.islice(_batches_forever(arrays["train"], config), num_steps):
    lr = rate(len(losses))
    state, metrics = p_train(state, batch, key)
    loss = float(metrics["loss_sum"] / metrics["count"])
    lrs.append(lr)
    losses.append(loss)
    if not math.isfinite(loss):
      reason = f"non-finite loss at lr {lr:.3g}"
      break
    smoothed = ema(losses)[-1]
    best = min(best, smoothed)
    if len(losses) > SKIP_START * num_steps and smoothed > DIVERGE_FACTOR * best:
      reason = f"smoothed loss above {DIVERGE_FACTOR:g}x its minimum at lr {lr:.3g}"
      break
  result = {**suggest(lrs, losses), "lrs": lrs, "losses": losses, "smoothed_loss": smooth(losses).tolist(),
            "stopped": reason, "configured_lr": config.optim.learning_rate,
            "config": config_fields.swept_config(rundir.config_to_dict(config)),
            "seconds": round(time.perf_counter() - start_time, 1)}
  logging.info("LR range test: suggestion %s (%s); stopped: %s.", result["suggestion"], result["method"], reason)
  return result


def measured_for(workdir: str, config) -> bool:
  """Whether `workdir` holds an LR range test of this config's recipe (config_fields.lr_find_mismatch): one measured
  for another config (`python -m cnn_val.lr_find --config=OTHER --workdir=W` before training W) is measured
  again, and says so."""
  found = rundir.read_json(workdir, rundir.LR_FIND_FILE)
  if found is None:
    return False
  changed = config_fields.lr_find_mismatch(found, rundir.config_to_dict(config))
  if changed:
    logging.warning("%s/%s was measured for another config (%s); this run measures its own.", workdir,
                    rundir.LR_FIND_FILE, ", ".join(f"{k}: {a!r} there, {b!r} here" for k, (a, b) in changed.items()))
  return not changed


def sweep_into(workdir: str, config, arrays: dict, num_classes: int, image_shape) -> dict | None:
  """A training run's own LR range test (config.lr_range_test, before its first epoch): `sweep` on its loaded data,
  written to `workdir`'s lr_find.json. Evidence for the doctor, not the run: a failure (e.g. memory) is logged and
  training goes on without it (None)."""
  try:
    found = sweep(config, arrays, num_classes, image_shape)
  except Exception as e:  # pylint: disable=broad-except
    logging.warning("The LR range test failed (%s: %s); training goes on without it (no lr_find.json; "
                    "`python -m cnn_val.lr_find --run=%s` runs it alone).", type(e).__name__, e, workdir)
    return None
  rundir.write_json(workdir, rundir.LR_FIND_FILE, found)
  logging.info("LR range test (%.1f s): the loss fell fastest at %.2g and bottomed out at %.2g; the run's rate is %g "
               "(lr_find.json; the doctor compares them).", found["seconds"], found["suggestion"] or math.nan,
               found["lr_at_min_loss"] or math.nan, config.optim.learning_rate)
  return found


def _batches_forever(train_arrays, config):
  from cnn_val.data import pipeline  # pylint: disable=import-outside-toplevel
  for epoch in itertools.count():
    yield from pipeline.train_batches(train_arrays, global_batch=config.batch_size, num_devices=1,
                                      seed=config.seed, epoch=epoch)
