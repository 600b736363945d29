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
import optax

SCHEDULES = ("constant", "exponential", "cosine", "warmup_cosine")
OPTIMIZERS = ("adam", "adamw", "sgd")
WEIGHT_DECAY_MODES = ("decoupled", "l2")


def create_schedule(optim_config, steps_per_epoch: int, num_epochs: int) -> optax.Schedule:
  """The learning rate as a function of the (global) step."""
  c = optim_config
  lr = c.learning_rate
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


def create_optimizer(optim_config, steps_per_epoch: int, num_epochs: int) -> optax.GradientTransformation:
  c = optim_config
  schedule = create_schedule(c, steps_per_epoch, num_epochs)
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
    parts.append(optax.add_decayed_weights(c.weight_decay, mask=decay_mask))
  parts.append(core)
  if c.weight_decay and c.weight_decay_mode == "decoupled":
    parts.append(optax.add_decayed_weights(c.weight_decay, mask=decay_mask))
  parts.append(optax.scale_by_learning_rate(schedule))
  return optax.chain(*parts)
