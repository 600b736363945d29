"""Learning-rate schedules and optimizers from `config.optim`, built from optax pieces.

Schedules (`config.optim.schedule`):
  constant     lr
  exponential  Keras `ExponentialDecay`: lr * decay_rate ** (step / decay_steps), the exponent floored when
               `staircase` is set (optax's `exponential_decay` has exactly these semantics)
  cosine       cosine decay from lr to lr * cosine_alpha over the whole run
  warmup_cosine linear warmup from 0 over `warmup_epochs`, then cosine decay to lr * cosine_alpha

Weight decay (`config.optim.weight_decay`, `config.optim.weight_decay_mode`):
  decoupled  Loshchilov & Hutter: the update gets `- lr * weight_decay * w`, applied after the optimizer's own
             scaling (so adam + decoupled == AdamW); masked so biases and normalisation scales never decay.
  l2         classic L2: `weight_decay * w` is added to the gradient before the optimizer (the gradient of
             `weight_decay / 2 * ||w||^2` in the loss), with the same mask.
"""

from __future__ import annotations

import jax
import ml_collections
import optax

SCHEDULES = ("constant", "exponential", "cosine", "warmup_cosine")
OPTIMIZERS = ("adam", "adamw", "sgd")
WEIGHT_DECAY_MODES = ("decoupled", "l2")
# The fields of config.optim that members of one population may set to different values (create_optimizer's
# `values`): they enter the chain as numbers, not as its structure.
POPULATION_FIELDS = ("learning_rate", "weight_decay")


# configs/default.py's `config.optim` (tests/test_optim.py keeps the two equal), for callers without a config.
DEFAULTS = dict(optimizer="adam", learning_rate=1e-3, schedule="exponential", decay_steps=5_000, decay_rate=0.7,
                staircase=False, warmup_epochs=0.0, cosine_alpha=0.0, b1=0.9, b2=0.999, eps=1e-7, momentum=0.9,
                nesterov=False, weight_decay=0.0, weight_decay_mode="decoupled", grad_clip_norm=0.0)


def optim_config(**fields) -> ml_collections.ConfigDict:
  """`config.optim` with the default values (DEFAULTS), the given fields changed (an unknown one is refused),
  for callers without a whole config: `create_optimizer(optim_config(learning_rate=3e-4), 100, 10)`."""
  config = ml_collections.ConfigDict(DEFAULTS)
  unknown = sorted(set(fields) - set(config.keys()))
  if unknown:
    raise ValueError(f"optim_config: unknown field(s) {unknown}; the fields are {sorted(config.keys())}.")
  config.update(fields)
  return config


def _resolve(optim_config_or_none, fields: dict):
  if optim_config_or_none is None:
    return optim_config(**fields)
  if fields:
    raise ValueError("Pass either a config.optim ConfigDict or keyword fields, not both.")
  return optim_config_or_none


def create_schedule(optim_config=None, steps_per_epoch: int = 1, num_epochs: int = 1, *, learning_rate=None,
                    **fields) -> optax.Schedule:
  """The learning rate as a function of the (global) step, from `config.optim` or keyword fields
  (`create_schedule(schedule='cosine', steps_per_epoch=100, num_epochs=10)`; defaults as configs/default.py).
  `learning_rate` (with a config): this rate instead of the config's, possibly a traced value (a population's
  member)."""
  c = _resolve(optim_config, fields)
  lr = c.learning_rate if learning_rate is None else learning_rate
  total_steps = max(1, steps_per_epoch * num_epochs)
  if c.schedule == "constant":
    return optax.constant_schedule(lr)
  if c.schedule == "exponential":
    return optax.exponential_decay(
        init_value=lr, transition_steps=c.decay_steps, decay_rate=c.decay_rate, staircase=c.staircase)
  if c.schedule == "cosine":
    return optax.cosine_decay_schedule(lr, decay_steps=total_steps, alpha=c.cosine_alpha)
  if c.schedule == "warmup_cosine":
    warmup_steps = int(round(c.warmup_epochs * steps_per_epoch))
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=lr, warmup_steps=warmup_steps,
        decay_steps=max(total_steps, warmup_steps + 1), end_value=lr * c.cosine_alpha)
  raise ValueError(f"config.optim.schedule={c.schedule!r}: expected one of {SCHEDULES}.")


def decay_mask(params):
  """True for the parameters that weight decay applies to: kernels (ndim > 1), not biases or norm scales."""
  return jax.tree.map(lambda p: p.ndim > 1, params)


def create_optimizer(optim_config=None, steps_per_epoch: int = 1, num_epochs: int = 1, *, values: dict | None = None,
                     **fields) -> optax.GradientTransformation:
  """The optimizer chain from `config.optim`, or from keyword fields with configs/default.py's defaults:
  `create_optimizer(learning_rate=3e-4, weight_decay=1e-4, optimizer='adamw', steps_per_epoch=100,
  num_epochs=10)`.

  `values` (with a config): {'learning_rate', 'weight_decay'} in place of the config's, which may be traced
  (a population's member, `steps.population_train_chunk`); the chain's structure, and so the optimizer
  state's, still follows the config (weight decay is in the chain when the config's is non-zero).
  """
  c = _resolve(optim_config, fields)
  values = values or {}
  unknown = sorted(set(values) - set(POPULATION_FIELDS))
  if unknown:
    raise ValueError(f"create_optimizer(values=...): {unknown} cannot vary per member; only {POPULATION_FIELDS}.")
  schedule = create_schedule(c, steps_per_epoch, num_epochs, learning_rate=values.get("learning_rate"))
  weight_decay = values.get("weight_decay", c.weight_decay)
  if c.optimizer in ("adam", "adamw"):
    core = optax.scale_by_adam(b1=c.b1, b2=c.b2, eps=c.eps)
  elif c.optimizer == "sgd":
    core = optax.trace(decay=c.momentum, nesterov=c.nesterov) if c.momentum else optax.identity()
  else:
    raise ValueError(f"config.optim.optimizer={c.optimizer!r}: expected one of {OPTIMIZERS}.")
  if c.weight_decay_mode not in WEIGHT_DECAY_MODES:
    raise ValueError(
        f"config.optim.weight_decay_mode={c.weight_decay_mode!r}: expected one of {WEIGHT_DECAY_MODES}.")
  if c.optimizer == "adamw" and c.weight_decay_mode != "decoupled":
    raise ValueError("config.optim.optimizer='adamw' means decoupled weight decay; set "
                     "config.optim.weight_decay_mode='decoupled' or use optimizer='adam' with L2.")

  parts = []
  if c.grad_clip_norm:
    parts.append(optax.clip_by_global_norm(c.grad_clip_norm))
  if c.weight_decay and c.weight_decay_mode == "l2":
    parts.append(optax.add_decayed_weights(weight_decay, mask=decay_mask))
  parts.append(core)
  if c.weight_decay and c.weight_decay_mode == "decoupled":
    parts.append(optax.add_decayed_weights(weight_decay, mask=decay_mask))
  parts.append(optax.scale_by_learning_rate(schedule))
  return optax.chain(*parts)
