"""The per-device step functions and the training state: pure functions, no data pipeline, no TensorFlow.

`train_step(state, batch, key)` and `eval_step(state, batch)` take the model and optimizer bound with
`functools.partial` and are wrapped once by `parallel.pmap_step`; with `axis_name=None` they run under plain
`jax.jit` instead. Inside a step, gradients, BatchNorm
statistics and metric sums are reduced over `parallel.AXIS`, so the state leaves the step identical on
every device. Importable on its own into other research code (and onto machines without TensorFlow).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import flax
import jax
from jax import lax
import jax.numpy as jnp
import optax

from cnn_val import augment, models, optim, parallel


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any

  ema = None  # a TrainState keeps no moving average of its weights (EmaTrainState does)


@flax.struct.dataclass
class EmaTrainState(TrainState):
  """A TrainState that also keeps `ema`, {'params', 'batch_stats'}: the exponential moving average of the
  weights (`train_step`'s ema_decay). A class of its own, so that a TrainState's pytree, and the checkpoints of
  runs without a moving average, stay exactly what they were before it existed."""
  ema: Any = None


def create_train_state(model, tx, key, image_shape, *, ema: bool = False) -> TrainState:
  """Initialises the model (outside pmap: build it with axis_name=None) and the optimizer state; `ema`: also
  keep a moving average of the weights, starting at the initial weights (an EmaTrainState)."""
  variables = model.init({"params": key}, jnp.zeros((1,) + tuple(image_shape), jnp.float32), train=False)
  params = variables["params"]
  batch_stats = variables.get("batch_stats", {})
  fields = dict(step=jnp.asarray(0, jnp.int32), params=params, batch_stats=batch_stats, opt_state=tx.init(params))
  if ema:
    return EmaTrainState(**fields, ema={"params": params, "batch_stats": batch_stats})
  return TrainState(**fields)


def ema_weights(state: TrainState) -> TrainState:
  """The state with its moving-average weights in place of the trained ones (to evaluate them)."""
  if state.ema is None:
    raise ValueError("This state keeps no moving average of its weights: train with config.ema_decay > 0.")
  return state.replace(params=state.ema["params"], batch_stats=state.ema["batch_stats"])


def ema_update(ema, params, batch_stats, step, decay: float):
  """One step of the weights' exponential moving average (BatchNorm statistics included), with TensorFlow's
  `ExponentialMovingAverage(num_updates=step)` warm-up: the decay is min(decay, (1 + step) / (10 + step)),
  so the first steps are not dominated by the random initial weights."""
  step = jnp.asarray(step, jnp.float32)
  rate = jnp.minimum(decay, (1.0 + step) / (10.0 + step))
  return optax.incremental_update({"params": params, "batch_stats": batch_stats}, ema, step_size=1.0 - rate)


def _variables(params, batch_stats) -> dict:
  return {"params": params, **({"batch_stats": batch_stats} if batch_stats else {})}


def _to_float(images):
  """uint8 images (0-255, as the data pipeline yields them) to [0, 1]; float images are taken as already on
  [0, 1]; any other dtype is refused (an int32 copy of 0-255 pixels would train silently at chance)."""
  if images.dtype == jnp.uint8:
    return images.astype(jnp.float32) / 255.0
  if jnp.issubdtype(images.dtype, jnp.floating):
    return images.astype(jnp.float32)
  raise TypeError(f"batch['image'] has dtype {images.dtype}: expected uint8 pixels (0-255) or floats on [0, 1].")


# Collectives over the device axis, or nothing when a step runs without one (plain jax.jit on one device).
def _pmean(x, axis_name):
  return x if axis_name is None else lax.pmean(x, axis_name)


def _psum(x, axis_name):
  return x if axis_name is None else lax.psum(x, axis_name)


def forward_corrected_losses(logits, labels, noise_transition):
  """Forward loss correction (Patrini et al., CVPR 2017): the cross-entropy of the given, noisy labels under
  p(given label | x) = softmax(logits) @ T, with T[i, j] = P(given label j | true class i)
  (`noise_transition`, [K, K]); the model's own softmax estimates the true class. Computed in log space."""
  log_t = jnp.log(jnp.maximum(jnp.asarray(noise_transition, jnp.float32), 1e-12))
  log_given = jax.nn.logsumexp(jax.nn.log_softmax(logits)[:, :, None] + log_t[None], axis=1)  # [B, K]
  return -jnp.take_along_axis(log_given, labels[:, None], axis=1)[:, 0]


def generalized_cross_entropy(cross_entropy, q: float):
  """The generalized cross-entropy (1 - p^q) / q of the label's probability p (Zhang and Sabuncu, NeurIPS 2018,
  the L_q loss), from the per-example cross-entropy -log p: (1 - exp(-q * CE)) / q. q -> 0 gives the
  cross-entropy, q = 1 the mean absolute error; in between, each example's gradient is the cross-entropy's
  times p^q, so examples the model finds implausible (most wrong labels, once it has learned) pull less."""
  return -jnp.expm1(-q * cross_entropy) / q


def _grads(params, batch_stats, images, labels, example_ids, step_key, *, model, class_weights,
           logit_offsets=None, noise_transition=None, gce_q=0.0):
  """Mean (class-weighted, logit-adjusted, forward-corrected) loss, the gradient of the loss trained on (the same,
  or its generalized cross-entropy for `gce_q` > 0), the correct count (of the model's own logits) and the new
  batch statistics for one (micro-)batch of float images. The loss returned, which runs log as `train_loss`, is
  the cross-entropy even where the generalized one is trained on: its scale (ln K at chance) is what the doctor's
  rules read."""

  def loss_fn(params):
    logits, updates = model.apply(_variables(params, batch_stats), images, train=True,
                                  example_ids=example_ids, rngs={"dropout": step_key}, mutable=["batch_stats"])
    logits = logits.astype(jnp.float32)
    adjusted = logits if logit_offsets is None else logits + jnp.asarray(logit_offsets, jnp.float32)
    if noise_transition is None:
      losses = optax.softmax_cross_entropy_with_integer_labels(adjusted, labels)
    else:  # the labels are noisy with known rates: the loss of the label through the noise
      losses = forward_corrected_losses(adjusted, labels, noise_transition)
    # Of the label's probability as the loss sees it (through the noise, where it is modelled).
    trained = generalized_cross_entropy(losses, gce_q) if gce_q else losses
    if class_weights is not None:  # Keras' class_weight: each example's loss times its class's weight
      weights = jnp.asarray(class_weights, jnp.float32)[labels]
      losses, trained = losses * weights, trained * weights
    return trained.mean(), (losses.mean(), jnp.sum(jnp.argmax(logits, -1) == labels),
                            updates.get("batch_stats", {}))

  (_, (loss, correct, new_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
  return loss, grads, correct, new_stats


def train_step(state: TrainState, batch, key, *, model, tx, micro_batch_size: int = 0,
               augmentation: augment.Augment = augment.Augment(), class_weights: tuple | None = None,
               reweight_from_step: int = 0, logit_offsets: tuple | None = None,
               noise_transition: tuple | None = None, gce_q: float = 0.0, signals: bool = True,
               ema_decay: float = 0.0, axis_name: str | None = parallel.AXIS,
               augment_magnitudes: dict | None = None):
  """One optimizer step on this device's part of the global batch; returns (new_state, metric sums).

  Under `jax.pmap` (as `parallel.pmap_step` wraps it) gradients and metrics are reduced over `axis_name`;
  with `axis_name=None` the same step runs under plain `jax.jit` on one device (build the model with
  `axis_name=None` too), with the same results as a one-device pmap.

  Images are augmented here, on the device, per example (`augment.augment_batch`), and the loss is
  weighted by `class_weights[label]` when given, from step `reweight_from_step` on (before it every class
  weighs 1: deferred re-weighting); `logit_offsets` (balance.logit_offsets) are added to the
  logits inside the loss only (logit adjustment: predictions and accuracies use the model's own logits);
  `noise_transition` (T[true, given], rows of K floats) corrects the loss for noisy labels
  (`forward_corrected_losses`); `gce_q` > 0 trains on the generalized cross-entropy of the same probability
  (`generalized_cross_entropy`).
  `signals` adds the doctor's update/parameter ratio. A state with `ema` (create_train_state(..., ema=True))
  updates its moving average with `ema_decay` (`ema_update`).

  With `micro_batch_size` smaller than the device batch, the batch is processed in equal micro-batches by
  `lax.scan`, accumulating gradients: the same step for models without batch statistics (to float
  round-off), cheaper where small batches run faster. BatchNorm then normalises each micro-batch with its
  own statistics and updates its running averages once per micro-batch.

  `augment_magnitudes` (augment.magnitudes): the augmentation's magnitudes as numbers, possibly traced (a
  population's member), `augmentation` then giving only which transforms run.
  """
  images, labels = batch["image"], batch["label"]
  local = labels.shape[0]
  # Global index of each example in the batch: dropout masks depend on it, not on the device layout.
  example_ids = (0 if axis_name is None else lax.axis_index(axis_name)) * local + jnp.arange(local)
  step_key = jax.random.fold_in(key, state.step)
  images = augment.preprocess(
      augmentation, augment.augment_batch(augmentation, _to_float(images), example_ids, step_key,
                                          magnitudes=augment_magnitudes))
  if class_weights is not None and reweight_from_step:  # deferred re-weighting (Cao et al., NeurIPS 2019)
    class_weights = jnp.where(state.step >= reweight_from_step, jnp.asarray(class_weights, jnp.float32), 1.0)
  grads_of = functools.partial(_grads, step_key=step_key, model=model, class_weights=class_weights,
                               logit_offsets=logit_offsets, noise_transition=noise_transition, gce_q=gce_q)

  num_micro = local // micro_batch_size if micro_batch_size and micro_batch_size < local else 1
  if num_micro == 1:
    loss, grads, correct, batch_stats = grads_of(state.params, state.batch_stats, images, labels, example_ids)
  else:
    split = lambda x: x.reshape((num_micro, -1) + x.shape[1:])

    def accumulate(carry, micro):
      loss_sum, grad_sum, correct_sum, stats = carry
      loss, grads, correct, stats = grads_of(state.params, stats, *micro)
      return (loss_sum + loss, jax.tree.map(jnp.add, grad_sum, grads), correct_sum + correct, stats), None

    zeros = (jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, state.params), jnp.zeros((), jnp.int32),
             state.batch_stats)
    (loss, grads, correct, batch_stats), _ = lax.scan(
        accumulate, zeros, (split(images), split(labels), split(example_ids)))
    loss, grads = loss / num_micro, jax.tree.map(lambda g: g / num_micro, grads)

  grads = _pmean(grads, axis_name)
  loss = _pmean(loss, axis_name)
  grad_norm = optax.global_norm(grads)
  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)

  param_updates, opt_state = tx.update(grads, state.opt_state, state.params)
  new_state = state.replace(
      step=state.step + 1,
      params=optax.apply_updates(state.params, param_updates),
      batch_stats=_pmean(batch_stats, axis_name),
      opt_state=opt_state)
  if state.ema is not None:
    if not 0.0 < ema_decay < 1.0:
      raise ValueError(f"The state keeps a moving average of its weights but ema_decay={ema_decay}: expected "
                       "0 < ema_decay < 1 (config.ema_decay).")
    new_state = new_state.replace(
        ema=ema_update(state.ema, new_state.params, new_state.batch_stats, state.step, ema_decay))
  # A non-finite step changes nothing, so the state the host finds after a NaN is the last good one.
  new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state, state)

  metrics = {
      "loss_sum": loss * local * _psum(1, axis_name),
      "correct": _psum(correct, axis_name),
      "count": _psum(local, axis_name),
      "grad_norm_sum": grad_norm,
      "steps": jnp.asarray(1),
      "nonfinite_steps": (~finite).astype(jnp.int32),
      "first_nonfinite_step": jnp.where(finite, jnp.iinfo(jnp.int32).max, state.step + 1).astype(jnp.int32),
  }
  if signals:  # the size of the step relative to the weights (seed models at Adam 1e-3: ~3e-3; diagnose.py)
    metrics["update_ratio_sum"] = (optax.global_norm(param_updates)
                                   / jnp.maximum(optax.global_norm(state.params), 1e-12))
  return new_state, metrics


def _in_micro_batches(fn, batch, micro_batch_size: int):
  """`fn(batch)` computed over consecutive micro-batches of `micro_batch_size` examples, one after another
  (`lax.map`), its outputs stacked along a new leading axis; one micro-batch (that axis of length 1) when 0
  or when it does not split the batch. For eval-mode functions, whose examples do not see each other."""
  size = next(iter(jax.tree.leaves(batch))).shape[0]
  if not micro_batch_size or micro_batch_size >= size or size % micro_batch_size:
    return jax.tree.map(lambda x: x[None], fn(batch))
  return lax.map(fn, jax.tree.map(lambda x: x.reshape((-1, micro_batch_size) + x.shape[1:]), batch))


def eval_step(state: TrainState, batch, *, model, num_classes: int,
              augmentation: augment.Augment = augment.Augment(), axis_name: str | None = parallel.AXIS,
              micro_batch_size: int = 0):
  """Masked metric sums over this device's batch, summed over devices (`axis_name`; None under plain
  `jax.jit`); includes the confusion matrix. Never augmented; only `augment.preprocess` (deterministic)
  applies. `batch['mask']` may be left out when every example counts. `micro_batch_size`: computed in
  micro-batches of that many examples (`parallel.eval_micro_batch_size`; the same sums: the model is in
  eval mode, each example on its own; 0 = the whole batch at once)."""
  variables = _variables(state.params, state.batch_stats)

  def sums(batch):
    images = augment.preprocess(augmentation, _to_float(batch["image"]))
    logits = model.apply(variables, images, train=False).astype(jnp.float32)
    labels = batch["label"]
    mask = batch.get("mask", jnp.ones(labels.shape, bool))
    weights = mask.astype(jnp.float32)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    preds = jnp.argmax(logits, -1)
    confusion = jnp.zeros((num_classes, num_classes), jnp.int32).at[labels, preds].add(mask.astype(jnp.int32))
    return {
        "loss_sum": jnp.sum(losses * weights),
        "correct": jnp.sum((preds == labels) * weights),
        "count": jnp.sum(weights),
        "confusion": confusion,
    }

  return _psum(jax.tree.map(lambda x: jnp.sum(x, 0), _in_micro_batches(sums, batch, micro_batch_size)),
               axis_name)


def predict_step(state: TrainState, batch, *, model, augmentation: augment.Augment = augment.Augment(),
                 axis_name: str | None = parallel.AXIS, micro_batch_size: int = 0):
  """Each example's softmax probabilities in eval mode, `{'probs': [..., K], 'mask': [...]}`; under pmap gathered
  over `axis_name` (device-major: `[devices, per_device, K]`, the same on every device). `micro_batch_size`
  as `eval_step`'s."""
  variables = _variables(state.params, state.batch_stats)

  def probs(batch):
    images = augment.preprocess(augmentation, _to_float(batch["image"]))
    return jax.nn.softmax(model.apply(variables, images, train=False).astype(jnp.float32))

  stacked = _in_micro_batches(probs, batch, micro_batch_size)
  out = {"probs": stacked.reshape((-1,) + stacked.shape[2:]),
         "mask": batch.get("mask", jnp.ones(batch["label"].shape, bool))}
  return out if axis_name is None else lax.all_gather(out, axis_name)


class PmappedSteps(NamedTuple):
  train: Any  # (state, batch, key) -> (state, metric sums)
  eval: Any  # (state, batch) -> metric sums
  model: Any
  micro_batch_size: int


def train_chunk(state: TrainState, images, labels, indices, key, *, step_fn):
  """`indices.shape[0]` consecutive train steps in one call, on a training split held on the device.

  `images` and `labels` are the whole training split (the same on every device); `indices[k]` are this
  device's examples of the k-th batch (int32, drawn by the host from (seed, epoch) exactly as
  `pipeline.train_batches` draws them). Each step gathers its batch on the device and runs `step_fn` (the
  bound `train_step`), so the result is the per-step loop's; each step's metric sums come back stacked
  along a leading step axis (the host sums them as it sums the per-step loop's, to the same numbers).
  """

  def body(state, idx):
    return step_fn(state, {"image": images[idx], "label": labels[idx]}, key)

  return lax.scan(body, state, indices)


def _bound_steps(config, num_classes: int, tx, devices, processes: int | None = None,
                 model_values: dict | None = None, augment_magnitudes: dict | None = None, **loss_terms):
  """The train and eval steps of `config` bound to its model and `tx`; `model_values`: the model's fields
  (MODEL_POPULATION_FIELDS) set to these numbers, which may be traced (a population's member); `loss_terms`:
  `train_step`'s class_weights, reweight_from_step, logit_offsets, noise_transition and gce_q (a run's are
  `training_run.RunData.loss_terms`; none: the plain cross-entropy)."""
  augmentation = augment.from_config(config.augment)
  model = models.create_model(config.model, num_classes, axis_name=parallel.AXIS, dtype=config.dtype)
  if model_values:
    model = model.clone(**{k: v for k, v in model_values.items() if hasattr(model, k)})
  shards = len(devices) * (processes or jax.process_count())  # the global batches split this many ways
  micro = parallel.micro_batch_size(config.micro_batch_size, config.batch_size // shards,
                                    has_batch_stats=models.has_batch_statistics(config.model))
  train = functools.partial(train_step, model=model, tx=tx, micro_batch_size=micro, augmentation=augmentation,
                            signals=config.get("signals", True), augment_magnitudes=augment_magnitudes,
                            ema_decay=config.get("ema_decay", 0.0), **loss_terms)
  evaluate = functools.partial(eval_step, model=model, num_classes=num_classes, augmentation=augmentation,
                               micro_batch_size=parallel.eval_micro_batch_size(config.eval_batch_size // shards))
  return train, evaluate, model, micro


def pmapped_steps(config, num_classes: int, tx, devices, *, across_processes: bool = True,
                  **loss_terms) -> PmappedSteps:
  """The train and eval steps for `config` exactly as `train_and_evaluate` runs them, pmapped once.

  The per-device batch is `config.batch_size` split over `devices` on every host; the model computes in
  `config.dtype` with BatchNorm synchronised over `parallel.AXIS`; training images are augmented as
  `config.augment` says; `loss_terms` as `_bound_steps`'. `across_processes=False`: steps that one process of
  a multi-process run runs alone.
  """
  train, evaluate, model, micro = _bound_steps(config, num_classes, tx, devices,
                                               processes=None if across_processes else 1, **loss_terms)
  p_train = parallel.pmap_step(train, devices, batch_argnums=(1,), num_args=3, across_processes=across_processes)
  p_eval = parallel.pmap_step(evaluate, devices, batch_argnums=(1,), num_args=2, across_processes=across_processes)
  return PmappedSteps(p_train, p_eval, model, micro)


def pmapped_predict(config, num_classes: int, devices):
  """`predict_step` for `config`'s model and preprocessing, pmapped: `(state, batch) -> {'probs', 'mask'}`
  gathered over the devices (one process)."""
  model = models.create_model(config.model, num_classes, axis_name=parallel.AXIS, dtype=config.dtype)
  micro = parallel.eval_micro_batch_size(config.eval_batch_size // len(devices))
  return parallel.pmap_step(
      functools.partial(predict_step, model=model, augmentation=augment.from_config(config.augment),
                        micro_batch_size=micro), devices, batch_argnums=(1,), num_args=2)


def chunk_config(config, platform: str):
  """`config` as a fused chunk runs it on `platform`. On CPU XLA's own convolution runs 15-27x slower inside a
  loop body than as a step of its own (ConvNet-BN, batch 32-128; benchmarks/fused_steps.py), while the matmul
  convolution runs faster there: inside a chunk, every convolution is a matmul (the same to float round-off;
  bit-identical to the per-step loop where its per-layer choice was matmul already, as for the seed models)."""
  if config.model.conv_impl != "auto" or platform != "cpu":
    return config
  config = config.copy_and_resolve_references()
  config.model.conv_impl = "matmul"
  return config


def pmapped_train_chunk(config, num_classes: int, tx, devices, *, across_processes: bool = True, **loss_terms):
  """`train_chunk` with `config`'s train step, pmapped: `(state, images, labels, indices, key)` with the split
  replicated on `devices` (`parallel.replicate`) and `indices` shaped `[devices, steps, per_device]`.
  `across_processes=False`: a chunk one process of a multi-process run runs alone (the pre-flight checks);
  `loss_terms` as `_bound_steps`'."""
  train, _, _, _ = _bound_steps(chunk_config(config, devices[0].platform), num_classes, tx, devices,
                                processes=None if across_processes else 1, **loss_terms)
  return parallel.pmap_step(functools.partial(train_chunk, step_fn=train), devices, batch_argnums=(3,),
                            num_args=5, across_processes=across_processes)


# The model's fields a population's members may set to different numbers (config.model.<field>): dropout rates,
# which enter the step as numbers (models.Dropout), not as its structure, when none of them is 0 in one member
# and not in another.
MODEL_POPULATION_FIELDS = ("dropout_rate", "block_dropout_rate")


def population_train_chunk(config, num_classes: int, steps_per_epoch: int, devices, **loss_terms):
  """`train_chunk` for a population: P models of `config` trained at once (`jax.vmap` over a leading member axis
  of the state), each with its own epoch order, dropout key and values, pmapped over `devices`:
  `(states, images, labels, indices, keys, values) -> (states, metrics)` with `indices` shaped
  `[devices, members, steps, per_device]`, `keys` `[members]`, `values` {'learning_rate', 'weight_decay'} of
  `[members]` (optim.POPULATION_FIELDS, and the model's MODEL_POPULATION_FIELDS), optionally 'class_weights'
  `[members, classes]` in place of `loss_terms`' class_weights (1 for every class of a member without weighting: the loss
  times 1 is the loss) and the augmentation's magnitudes ('augment.<name>', augment.magnitudes: `config`'s
  augmentation then gives only which transforms run), and every metric `[members, steps]`. Each member
  computes what `pmapped_train_chunk` computes for its own config (to float round-off: the rates, decay and
  magnitudes enter as traced numbers)."""
  config = chunk_config(config, devices[0].platform)

  def member(state, images, labels, indices, key, values):
    tx = optim.create_optimizer(config.optim, steps_per_epoch, config.num_epochs,
                                values={k: v for k, v in values.items() if k in optim.POPULATION_FIELDS})
    # The member's own class weights (all 1 for an unweighted one) in place of the shared ones.
    terms = {**loss_terms, **({"class_weights": values["class_weights"]} if "class_weights" in values else {})}
    magnitudes = {k[len("augment."):]: v for k, v in values.items() if k.startswith("augment.")} or None
    train, _, _, _ = _bound_steps(config, num_classes, tx, devices,
                                  model_values={k: v for k, v in values.items() if k in MODEL_POPULATION_FIELDS},
                                  augment_magnitudes=magnitudes, **terms)
    return train_chunk(state, images, labels, indices, key, step_fn=train)

  return parallel.pmap_step(jax.vmap(member, in_axes=(0, None, None, 0, 0, 0)), devices, batch_argnums=(3,),
                            num_args=6)
