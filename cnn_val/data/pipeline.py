"""Host-side tf.data batching: seeded per-epoch shuffling for training, padded and masked batches for eval.

Batches come out as numpy dicts shaped for `jax.pmap`: `image` uint8 `[devices, per_device, H, W, C]`,
`label` int32 `[devices, per_device]` and, for evaluation, `mask` bool `[devices, per_device]` (False on
padding). Images stay uint8 on the host; the step converts them on the device (4x less to copy).

Training order depends only on (seed, epoch), so a run resumed at an epoch boundary sees exactly the batches
an uninterrupted run would.
"""

from __future__ import annotations

from typing import Iterator

import jax
import numpy as np
import tensorflow as tf


def _check_labels(num_classes: int, split_name: str):
  """A map over batches (not examples: per-example asserts cost 4x the rest of the pipeline)."""
  def check(ex):
    label = ex["label"]
    tf.debugging.assert_non_negative(label, message=f"{split_name}: a label is negative")
    tf.debugging.assert_less(
        label, num_classes,
        message=f"{split_name}: a label is >= num_classes={num_classes}; labels must lie in [0, {num_classes})")
    return ex
  return check


def _per_device(batch, num_devices: int):
  return tf.nest.map_structure(lambda x: tf.reshape(x, tf.concat([[num_devices, -1], tf.shape(x)[1:]], 0)), batch)


def _checked_per_device(num_classes: int, split_name: str, num_devices: int):
  check = _check_labels(num_classes, split_name)
  return lambda batch: _per_device(check(batch), num_devices)


def shard_for_host(ds: tf.data.Dataset) -> tf.data.Dataset:
  """Each host reads its own slice (multi-host runs); a no-op on one host."""
  if jax.process_count() > 1:
    ds = ds.shard(jax.process_count(), jax.process_index())
  return ds


def train_batches(ds: tf.data.Dataset, *, global_batch: int, num_devices: int, num_classes: int, seed: int,
                  epoch: int, shuffle_buffer: int) -> Iterator[dict]:
  """One epoch of shuffled, full training batches (the remainder of the epoch is dropped)."""
  local_batch = global_batch // jax.process_count()
  # Per-epoch seed: a fresh, deterministic permutation for each epoch, reproducible on resume.
  epoch_seed = int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0] % (2**31))
  ds = shard_for_host(ds).shuffle(shuffle_buffer, seed=epoch_seed, reshuffle_each_iteration=False)
  ds = ds.batch(local_batch, drop_remainder=True)
  ds = ds.map(_checked_per_device(num_classes, "train", num_devices), num_parallel_calls=tf.data.AUTOTUNE,
              deterministic=True)
  return ds.prefetch(2).as_numpy_iterator()


def eval_batches(ds: tf.data.Dataset, *, global_batch: int, num_devices: int, num_classes: int,
                 split_name: str) -> Iterator[dict]:
  """Every example exactly once; the last batch is padded to full size and masked."""
  local_batch = global_batch // jax.process_count()
  ds = shard_for_host(ds).map(lambda ex: {**ex, "mask": tf.constant(True)})
  ds = ds.batch(local_batch).map(_check_labels(num_classes, split_name))
  for batch in ds.prefetch(2).as_numpy_iterator():
    n = batch["label"].shape[0]
    if n < local_batch:
      batch = {k: np.concatenate([v, np.zeros((local_batch - n,) + v.shape[1:], v.dtype)])
               for k, v in batch.items()}
    yield {k: v.reshape((num_devices, -1) + v.shape[1:]) for k, v in batch.items()}
