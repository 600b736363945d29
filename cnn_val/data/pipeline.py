"""Host-side batching: seeded per-epoch permutations for training, padded and masked batches for eval.

Batches come out as numpy dicts shaped for `jax.pmap`: `image` uint8 `[devices, per_device, H, W, C]`,
`label` int32 `[devices, per_device]` and, for evaluation, `mask` bool `[devices, per_device]` (False on
padding). Images stay uint8 on the host; the step converts them on the device (4x less to copy).

Training order depends only on (seed, epoch), so a run resumed at an epoch boundary sees exactly the batches
an uninterrupted run would. Every split is held in host memory as numpy arrays (tf.data reads and decodes a
TFDS split once, in `to_arrays`); batching is numpy alone, so a dataset given as arrays (`config.data.name=
'npz'`) trains without TensorFlow.
"""

from __future__ import annotations

from typing import Iterator

import jax
import numpy as np

from cnn_val.data import balance


def check_labels(labels: np.ndarray, num_classes: int, split_name: str) -> None:
  """Every label an integer in [0, num_classes), checked once per split."""
  labels = np.asarray(labels)
  if labels.size and labels.min() < 0:
    raise ValueError(f"{split_name}: a label is negative ({int(labels.min())}); labels must lie in "
                     f"[0, {num_classes})")
  if labels.size and labels.max() >= num_classes:
    raise ValueError(f"{split_name}: a label is >= num_classes={num_classes} ({int(labels.max())}); labels must "
                     f"lie in [0, {num_classes})")


def to_arrays(ds, num_classes: int, split_name: str) -> dict[str, np.ndarray]:
  """The whole (in-memory) split as numpy arrays {'image', 'label'}, labels checked once: the source of every
  batch. `ds` is an unbatched tf.data dataset (a TFDS split, read once) or already such a dict of arrays."""
  if isinstance(ds, dict):
    arrays = {k: np.asarray(v) for k, v in ds.items()}
  else:
    chunks = list(ds.batch(4096).as_numpy_iterator())
    arrays = {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]} if chunks else {}
  if not arrays or not len(arrays["label"]):
    raise ValueError(f"The {split_name} split is empty; " + (
        "check config.data.train_split and max_train_examples." if split_name == "train" else
        "check the dataset's split (config.data.test_split, validation_fraction, max_eval_examples, or the "
        "arrays of an npz file)."))
  check_labels(arrays["label"], num_classes, split_name)
  return arrays


def from_arrays(arrays: dict[str, np.ndarray]):
  """An unbatched tf.data dataset of in-memory arrays (for code that wants one; cnn_val batches arrays)."""
  from cnn_val import cli  # pylint: disable=import-outside-toplevel
  return cli.tensorflow().data.Dataset.from_tensor_slices(arrays)


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


def eval_batches(arrays, *, global_batch: int, num_devices: int, num_classes: int,
                 split_name: str) -> Iterator[dict]:
  """Every example exactly once, in order; the last batch is padded to full size and masked.

  `arrays` is a split as a dict of numpy arrays (`to_arrays`; a tf.data dataset is read into one first). In a
  multi-process run each process takes every `process_count`-th example from its index on, and every process
  yields the same number of batches (the largest shard's), a process with fewer examples padding with fully
  masked batches: the steps' collectives need every process in every batch."""
  if isinstance(arrays, dict):
    check_labels(arrays["label"], num_classes, split_name)
  else:
    arrays = to_arrays(arrays, num_classes, split_name)
  local_batch = global_batch // jax.process_count()
  shards, total = jax.process_count(), len(arrays["label"])
  if shards > 1:
    arrays = {k: v[jax.process_index()::shards] for k, v in arrays.items()}
  largest_shard = -(-total // shards)
  num_batches = -(-largest_shard // local_batch)
  for start in range(0, num_batches * local_batch, local_batch):
    batch = {k: v[start:start + local_batch] for k, v in arrays.items()}
    batch["mask"] = np.ones(len(batch["label"]), bool)
    short = local_batch - len(batch["label"])
    if short:
      batch = {k: np.concatenate([v, np.zeros((short,) + v.shape[1:], v.dtype)]) for k, v in batch.items()}
    yield {k: v.reshape((num_devices, -1) + v.shape[1:]) for k, v in batch.items()}
