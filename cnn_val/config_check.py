"""Checks a config before anything runs, with errors that name the field, what was expected and what to do."""

from __future__ import annotations

import math

from cnn_val import augment, fast_ops, models, optim, parallel
from cnn_val.data import balance, scenarios


def _fail(field: str, value, expected: str) -> None:
  raise ValueError(f"config.{field}={value!r}: expected {expected}.")


def _finite(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _positive_int(config, field: str, expected: str = "a positive integer") -> None:
  value = config
  for part in field.split("."):
    value = value[part]
  if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
    _fail(field, value, expected)


def _count(config, field: str, expected: str) -> None:
  """A non-negative integer field (absent in configs from before it existed: fine)."""
  value = config.get(field, 0)
  if isinstance(value, bool) or not isinstance(value, int) or value < 0:
    _fail(field, value, expected)


def validate(config) -> None:
  for field in ("num_epochs", "batch_size", "eval_batch_size", "log_every_steps", "eval_every_epochs"):
    _positive_int(config, field)
  # The resolvers the model builder uses raise the same field-naming errors; call them before anything runs.
  models.resolve_dtype(config.dtype)
  fast_ops.resolve_impl(config.model.conv_impl)
  fast_ops.resolve_pool_impl(config.model.pool_impl)
  for field, expected in (
      ("early_stopping_patience", "0 (off) or a number of evaluations without improvement"),
      ("profile_steps", "0 (off) or a number of train steps to trace"),
      ("steps_per_call", "0 (auto), 1 (the per-step loop) or a number of train steps per host call"),
      ("train_eval_examples", "0 (off) or a count of training examples evaluated like validation")):
    _count(config, field, expected)
  ema_decay = config.get("ema_decay", 0.0)
  if not (_finite(ema_decay) and 0 <= ema_decay < 1):
    _fail("ema_decay", ema_decay, "0 (off) or a decay in (0, 1), e.g. 0.999")
  if config.micro_batch_size < 0:
    _fail("micro_batch_size", config.micro_batch_size, "0 (auto) or a positive count")
  if config.model.name not in models.MODELS:
    _fail("model.name", config.model.name, f"one of {sorted(models.MODELS)}")
  if config.optim.optimizer not in optim.OPTIMIZERS:
    _fail("optim.optimizer", config.optim.optimizer, f"one of {list(optim.OPTIMIZERS)}")
  if config.optim.schedule not in optim.SCHEDULES:
    _fail("optim.schedule", config.optim.schedule, f"one of {list(optim.SCHEDULES)}")
  if config.optim.weight_decay_mode not in optim.WEIGHT_DECAY_MODES:
    _fail("optim.weight_decay_mode", config.optim.weight_decay_mode, f"one of {list(optim.WEIGHT_DECAY_MODES)}")
  if not (_finite(config.optim.learning_rate) and config.optim.learning_rate > 0):
    _fail("optim.learning_rate", config.optim.learning_rate, "a finite number > 0, e.g. 1e-3 for Adam")
  if config.optim.schedule == "exponential":
    _positive_int(config, "optim.decay_steps")
    if not (_finite(config.optim.decay_rate) and 0 < config.optim.decay_rate <= 1):
      _fail("optim.decay_rate", config.optim.decay_rate,
            "a factor in (0, 1] applied every optim.decay_steps steps (above 1 the learning rate grows without "
            "bound); e.g. 0.7, or optim.schedule='constant'")
  if not (_finite(config.optim.weight_decay) and config.optim.weight_decay >= 0):
    _fail("optim.weight_decay", config.optim.weight_decay, "a finite number >= 0, e.g. 1e-4, or 0 for none")
  gce_q = config.get("gce_q", 0.0)
  if isinstance(gce_q, bool) or not (_finite(gce_q) and 0.0 <= gce_q <= 1.0):
    _fail("gce_q", gce_q, "a number in [0, 1]: 0 trains on the cross-entropy, 0.7 the generalized "
          "cross-entropy of Zhang and Sabuncu (robust to noisy labels), 1 the mean absolute error")
  for field in ("dropout_rate", "block_dropout_rate"):
    rate = config.model[field]
    if not 0.0 <= rate < 1.0:
      _fail(f"model.{field}", rate, "a rate in [0, 1): the fraction of units dropped, 0 for none")
  # The seed models' levers; .get as in models.create_model, for configs written before they existed.
  multiplier = config.model.get("width_multiplier", 1.0)
  if isinstance(multiplier, bool) or not isinstance(multiplier, (int, float)) or not (
      math.isfinite(multiplier) and multiplier > 0):
    _fail("model.width_multiplier", multiplier,
          "a finite number > 0 that scales every conv layer's channels; 1.0 keeps the seed's, 2.0 doubles them")
  kernel_init = config.model.get("kernel_init", "lecun_normal")
  if kernel_init not in models.KERNEL_INITS:
    _fail("model.kernel_init", kernel_init, f"one of {sorted(models.KERNEL_INITS)} (Flax's default, Keras' default)")
  extra_blocks = config.model.get("extra_blocks", 0)
  if isinstance(extra_blocks, bool) or not isinstance(extra_blocks, int) or extra_blocks < 0:
    _fail("model.extra_blocks", extra_blocks,
          "an integer >= 0: the conv blocks added after the seed's; 0 keeps the seed's depth")
  _positive_int(config, "model.convs_per_block",  # in every config since ConvNet had it
                "an integer >= 1: the 3x3 conv layers before each max-pool (ConvNet and the seed models); 1 keeps "
                "the seed's")
  if config.model.name in ("ConvNet", "ResNet") and (
      not config.model.widths or any(int(w) <= 0 for w in config.model.widths)):
    _fail("model.widths", config.model.widths, "a non-empty tuple of positive channel counts")
  augment.from_config(config.augment)  # raises naming the field
  frac = config.data.validation_fraction
  if config.data.name not in ("image_folder", "npz") and not (_finite(frac) and 0 < frac < 1):  # a folder may bring its own
    _fail("data.validation_fraction", frac, "a fraction in (0, 1)")
  scenarios.validate(config.data.scenario)  # class indices are checked again once the data is loaded
  if config.imbalance.class_weighting not in balance.WEIGHTINGS:
    _fail("imbalance.class_weighting", config.imbalance.class_weighting, f"one of {list(balance.WEIGHTINGS)}")
  if config.imbalance.resampling not in balance.RESAMPLINGS:
    _fail("imbalance.resampling", config.imbalance.resampling, f"one of {list(balance.RESAMPLINGS)}")
  if not 0.0 <= config.imbalance.beta < 1.0:
    _fail("imbalance.beta", config.imbalance.beta, "a number in [0, 1), e.g. 0.999")
  deferred = config.imbalance.get("deferred_epochs", 0)
  if isinstance(deferred, bool) or not isinstance(deferred, int) or not 0 <= deferred < config.num_epochs:
    _fail("imbalance.deferred_epochs", deferred,
          f"an integer in [0, num_epochs={config.num_epochs}): the epochs trained before the class weights apply")
  if deferred and config.imbalance.class_weighting == "none":
    _fail("imbalance.deferred_epochs", deferred, "0 while imbalance.class_weighting='none' (it defers the class "
          "weights; set imbalance.class_weighting=inverse or effective_number)")
  tau = config.imbalance.get("logit_adjustment", 0.0)
  if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not 0.0 <= tau < float("inf"):
    _fail("imbalance.logit_adjustment", tau, "a number >= 0 (0: off; 1: Menon et al.'s logit adjustment)")
  if config.data.max_train_examples < 0:
    _fail("data.max_train_examples", config.data.max_train_examples, "0 (all) or a positive count")
  for field in ("exclude_train_examples", "relabel_train_examples", "noise_transition"):
    if not isinstance(config.data.get(field, ""), str):
      _fail(f"data.{field}", config.data.get(field), "the path of a JSON file (the doctor writes one), or '' (off)")
  fraction = config.data.get("train_fraction", 1.0)
  if not (_finite(fraction) and 0 < fraction <= 1):
    _fail("data.train_fraction", fraction, "a fraction in (0, 1]: the share of the training split kept (1 = all)")


def validate_batch_sizes(config, num_shards: int) -> None:
  """Global batch sizes must split evenly over all devices of all hosts."""
  for field in ("batch_size", "eval_batch_size"):
    value = config[field]
    if value % num_shards:
      raise ValueError(
          f"config.{field}={value} does not split evenly over {num_shards} devices; use a multiple of "
          f"{num_shards} (e.g. {max(num_shards, value // num_shards * num_shards)}), or set config.num_devices.")
  # Before anything is written: the micro-batch must divide the per-device batch.
  parallel.micro_batch_size(config.micro_batch_size, config.batch_size // num_shards,
                            has_batch_stats=models.has_batch_statistics(config.model))
