"""Host-side batching: seeded per-epoch permutations for training, padded and masked tf.data batches for eval.

Batches come out as numpy dicts shaped for `jax.pmap`: `image` uint8 `[devices, per_device, H, W, C]`,
`label` int32 `[devices, per_device]` and, for evaluation, `mask` bool `[devices, per_device]` (False on
padding). Images stay uint8 on the host; the step converts them on the device (4x less to copy).

Training order depends only on (seed, epoch), so a run resumed at an epoch boundary sees exactly the batches
an uninterrupted run would. The training split is held in host memory as numpy arrays (tf.data reads and
decodes it once).
"""

from __future__ import annotations

from typing import Iterator

import jax
import numpy as np
import tensorflow as tf

from cnn_val.data import balance


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


def shard_for_host(ds: tf.data.Dataset) -> tf.data.Dataset:
  """Each host reads its own slice (multi-host runs); a no-op on one host."""
  if jax.process_count() > 1:
    ds = ds.shard(jax.process_count(), jax.process_index())
  return ds


def to_arrays(ds: tf.data.Dataset, num_classes: int, split_name: str) -> dict[str, np.ndarray]:
  """The whole (in-memory) split as numpy arrays, labels checked once: the source of training batches."""
  chunks = list(ds.batch(4096).map(_check_labels(num_classes, split_name)).as_numpy_iterator())
  if not chunks:
    raise ValueError(f"The {split_name} split is empty; check config.data.train_split and max_train_examples.")
  return {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}


def from_arrays(arrays: dict[str, np.ndarray]) -> tf.data.Dataset:
  """An unbatched dataset of in-memory arrays (e.g. a split changed by a fault scenario)."""
  return tf.data.Dataset.from_tensor_slices(arrays)


def train_indices(labels: np.ndarray, *, global_batch: int, num_devices: int, seed: int, epoch: int,
                  num_classes: int = 0, resampling: str = "none") -> np.ndarray:
  """This host's example indices for one epoch of full training batches, int32 `[steps, devices, per_device]`.

  The order is a permutation drawn from (seed, epoch) over the in-memory split (with `resampling`,
  oversample/undersample, a class-balanced draw; `balance.epoch_order`); the remainder of the epoch is
  dropped. Every host of a multi-host run draws the same permutation and takes its own slice of each global
  batch. `train_batches` gathers these on the host; device-resident training gathers them on the device.
  """
  order = balance.epoch_order(labels, num_classes, resampling, seed=seed, epoch=epoch)
  steps = len(order) // global_batch
  local_batch = global_batch // jax.process_count()
  offset = jax.process_index() * local_batch
  batches = np.asarray(order[:steps * global_batch]).reshape(steps, global_batch)
  return batches[:, offset:offset + local_batch].reshape(steps, num_devices, -1).astype(np.int32)


def train_batches(arrays: dict[str, np.ndarray], *, global_batch: int, num_devices: int, seed: int,
                  epoch: int, num_classes: int = 0, resampling: str = "none") -> Iterator[dict]:
  """One epoch of full training batches in a fresh random order (`train_indices`), gathered on the host.

  A permutation over the in-memory split, not tf.data's shuffle: no shuffle buffer to refill at each epoch
  (with tf.data's that cost 1.5 s per Fashion-MNIST epoch), and a run resumed at an epoch boundary sees
  exactly the batches an uninterrupted run would.
  """
  for idx in train_indices(arrays["label"], global_batch=global_batch, num_devices=num_devices, seed=seed,
                           epoch=epoch, num_classes=num_classes, resampling=resampling):
    flat = idx.reshape(-1)
    yield {k: v[flat].reshape((num_devices, -1) + v.shape[1:]) for k, v in arrays.items()}


def eval_batches(ds: tf.data.Dataset, *, global_batch: int, num_devices: int, num_classes: int,
                 split_name: str) -> Iterator[dict]:
  """Every example exactly once; the last batch is padded to full size and masked.

  In a multi-process run each process reads its shard (`shard_for_host`), and every process yields the same
  number of batches (the largest shard's), a process with fewer examples padding with fully masked batches:
  the steps' collectives need every process in every batch."""
  local_batch = global_batch // jax.process_count()
  shards, target = jax.process_count(), None
  if shards > 1:
    total = int(ds.cardinality())
    if total < 0:  # unknown (e.g. a filtered split): counted once
      total = int(ds.reduce(0, lambda count, _: count + 1))
    largest_shard = -(-total // shards)
    target = -(-largest_shard // local_batch)
  ds = shard_for_host(ds).map(lambda ex: {**ex, "mask": tf.constant(True)})
  ds = ds.batch(local_batch).map(_check_labels(num_classes, split_name))
  yielded, template = 0, None
  for batch in ds.prefetch(2).as_numpy_iterator():
    n = batch["label"].shape[0]
    if n < local_batch:
      batch = {k: np.concatenate([v, np.zeros((local_batch - n,) + v.shape[1:], v.dtype)])
               for k, v in batch.items()}
    template = batch
    yielded += 1
    yield {k: v.reshape((num_devices, -1) + v.shape[1:]) for k, v in batch.items()}
  if target is not None and template is not None:
    for _ in range(target - yielded):  # this shard ran out first: masked batches keep the processes in step
      empty = {k: np.zeros_like(v) for k, v in template.items()}
      yield {k: v.reshape((num_devices, -1) + v.shape[1:]) for k, v in empty.items()}
