"""Offline Fashion-MNIST preparation, splits, batching (seeded shuffling, padded and masked eval), errors."""

import os
import time

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from cnn_val.data import fashion_mnist_offline, pipeline, sources
from tests.conftest import make_images


def test_prepared_data_reads_with_plain_tfds_load(tiny_data_dir):
  ds, info = tfds.load("fashion_mnist", data_dir=tiny_data_dir, split="train", download=False,
                       with_info=True)
  assert info.splits["train"].num_examples == 1200 and info.splits["test"].num_examples == 200
  assert info.features["label"].names[0] == "T-shirt/top"
  # TFDS stores examples in its own (hashed) order, as its real fashion_mnist does; the content is unchanged.
  got = sorted((ex["image"][..., 0].tobytes(), int(ex["label"])) for ex in tfds.as_numpy(ds))
  images, labels = make_images(1200, seed=1)
  assert got == sorted((image.tobytes(), int(label)) for image, label in zip(images, labels))


def _keys(arrays):
  return [(image.tobytes(), int(label)) for image, label in zip(arrays["image"], arrays["label"])]


def test_splits_hold_out_validation_from_the_end_of_train(tiny_config):
  splits = sources.load_splits(tiny_config.data)
  assert (splits.num_train, splits.num_validation, splits.num_test) == (1080, 120, 200)
  assert splits.num_classes == 10 and splits.image_shape == (28, 28, 1)
  train, validation = _keys(splits.train), _keys(splits.validation)
  assert len(set(train) | set(validation)) == 1200 and not set(train) & set(validation)
  assert splits.train["image"].dtype == np.uint8 and splits.train["label"].dtype == np.int32
  tiny_config.data.max_train_examples = 100
  assert sources.load_splits(tiny_config.data).num_train == 100


def _epoch_labels(splits, epoch, seed=0, num_devices=2):
  arrays = pipeline.to_arrays(splits.train, 10, "train")
  batches = list(pipeline.train_batches(arrays, global_batch=40, num_devices=num_devices, seed=seed,
                                        epoch=epoch))
  assert all(b["image"].shape == (num_devices, 40 // num_devices, 28, 28, 1) for b in batches)
  assert all(b["image"].dtype == np.uint8 and b["label"].dtype == np.int32 for b in batches)
  return np.concatenate([b["label"].reshape(-1) for b in batches])


def test_train_order_is_a_function_of_seed_and_epoch(tiny_config):
  splits = sources.load_splits(tiny_config.data)
  first = _epoch_labels(splits, epoch=0)
  assert len(first) == 1080 // 40 * 40  # full batches only
  counts = np.bincount([label for _, label in _keys(splits.train)], minlength=10)
  assert np.all(np.bincount(first, minlength=10) <= counts)  # drawn from the split, without replacement
  np.testing.assert_array_equal(first, _epoch_labels(splits, epoch=0))  # reproducible (resume)
  assert not np.array_equal(first, _epoch_labels(splits, epoch=1))  # reshuffled each epoch
  assert not np.array_equal(first, _epoch_labels(splits, epoch=0, seed=1))


def test_eval_batches_cover_every_example_once_with_a_mask(tiny_config):
  splits = sources.load_splits(tiny_config.data)
  batches = list(pipeline.eval_batches(splits.validation, global_batch=32, num_devices=4, num_classes=10,
                                       split_name="validation"))
  assert len(batches) == 4  # 120 = 3 * 32 + 24: the last batch padded with 8 masked examples
  assert all(b["image"].shape == (4, 8, 28, 28, 1) for b in batches)
  mask = np.concatenate([b["mask"].reshape(-1) for b in batches])
  assert mask.sum() == 120 and not mask[120:].any()
  labels = np.concatenate([b["label"].reshape(-1) for b in batches])[mask]
  np.testing.assert_array_equal(labels, [label for _, label in _keys(splits.validation)])


def test_training_arrays_check_labels_once_and_refuse_an_empty_split():
  ds = tf.data.Dataset.from_tensor_slices(
      {"image": np.zeros((3, 2, 2, 1), np.uint8), "label": np.array([0, 5, 1], np.int32)})
  with pytest.raises(ValueError, match=r"train: a label is >= num_classes=5 \(5\)"):
    pipeline.to_arrays(ds, 5, "train")
  with pytest.raises(ValueError, match=r"validation: a label is negative \(-1\)"):
    pipeline.to_arrays({"image": np.zeros((2, 2, 2, 1), np.uint8), "label": np.array([0, -1])}, 5, "validation")
  with pytest.raises(ValueError, match="train split is empty"):
    pipeline.to_arrays(ds.take(0), 5, "train")


def test_labels_out_of_range_are_named():
  ds = tf.data.Dataset.from_tensor_slices(
      {"image": np.zeros((4, 2, 2, 1), np.uint8), "label": np.array([0, 1, 7, 2], np.int32)})
  for split in (ds, pipeline.to_arrays(ds, 8, "validation")):  # a tf.data split, or arrays
    with pytest.raises(ValueError, match=r"validation: a label is >= num_classes=5 \(7\)"):
      list(pipeline.eval_batches(split, global_batch=4, num_devices=1, num_classes=5, split_name="validation"))


def test_missing_dataset_offline_fails_fast_with_instructions(tiny_config, tmp_path, monkeypatch):
  monkeypatch.setattr(sources, "internet_reachable", lambda *a, **k: False)
  tiny_config.data.name = "mnist"
  tiny_config.data.data_dir = str(tmp_path)
  tiny_config.data.download = True
  start = time.monotonic()
  with pytest.raises(sources.DatasetUnavailableError, match=r"'mnist' is not prepared.*tfds build mnist"):
    sources.load_splits(tiny_config.data)
  assert time.monotonic() - start < 10
  tiny_config.data.download = False
  with pytest.raises(sources.DatasetUnavailableError, match="config.data.download=False"):
    sources.load_splits(tiny_config.data)


def test_internet_probe_says_no_quickly_for_a_closed_port():
  start = time.monotonic()
  assert not sources.internet_reachable(("127.0.0.1", 9), timeout=2.0)
  assert time.monotonic() - start < 5


def test_missing_fashion_mnist_files_name_the_debian_package(tmp_path, monkeypatch):
  monkeypatch.setattr(fashion_mnist_offline, "DEBIAN_DIR", str(tmp_path / "nowhere"))
  assert fashion_mnist_offline.local_files() is None
  with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
    fashion_mnist_offline.prepare(str(tmp_path / "data"))


def test_unknown_dataset_and_bad_split_settings(tiny_config):
  tiny_config.data.name = "no_such_dataset_xyz"
  with pytest.raises(ValueError, match="config.data.name='no_such_dataset_xyz' is not a TFDS dataset"):
    sources.load_splits(tiny_config.data)
  tiny_config.data.name = "fashion_mnist"
  tiny_config.data.validation_fraction = 1.5
  with pytest.raises(ValueError, match=r"config.data.validation_fraction=1.5"):
    sources.load_splits(tiny_config.data)
  tiny_config.data.validation_fraction = 0.1
  tiny_config.data.test_split = "holdout"
  with pytest.raises(ValueError, match=r"config.data.test_split='holdout'"):
    sources.load_splits(tiny_config.data)


def test_fashion_mnist_is_prepared_automatically_on_first_use(tmp_path, monkeypatch, tiny_config):
  from tests.conftest import write_tiny_source
  monkeypatch.setattr(fashion_mnist_offline, "DEBIAN_DIR", write_tiny_source(str(tmp_path / "debian")))
  tiny_config.data.data_dir = str(tmp_path / "fresh")
  tiny_config.data.download = False
  splits = sources.load_splits(tiny_config.data)  # not prepared yet: prepared from the local files
  assert splits.num_train + splits.num_validation == 1200
  assert os.path.isdir(tmp_path / "fresh" / "fashion_mnist")


def _cache_files(data_dir):
  folder = os.path.join(data_dir, "fashion_mnist", "3.0.1", sources.ARRAY_CACHE)
  return sorted(os.path.join(folder, n) for n in os.listdir(folder)) if os.path.isdir(folder) else []


def test_decoded_splits_are_cached_beside_the_dataset_and_read_back_without_tensorflow(tmp_path, monkeypatch,
                                                                                        tiny_config):
  from tests.conftest import write_tiny_source
  data_dir = str(tmp_path / "data")
  fashion_mnist_offline.prepare(data_dir, source_dir=write_tiny_source(str(tmp_path / "source")))
  tiny_config.data.data_dir = data_dir
  decoded = sources.load_splits(tiny_config.data)  # decoded through tf.data, and cached
  files = _cache_files(data_dir)
  assert [os.path.basename(f).split("-")[0] for f in files] == ["test", "train"]  # whole splits, sliced in numpy
  with monkeypatch.context() as m:  # read back: tf.data is not touched
    m.setattr(sources, "_supervised", lambda *a: pytest.fail("decoded again instead of read from the cache"))
    cached = sources.load_splits(tiny_config.data)
  for name in ("train", "validation", "test"):
    for key in ("image", "label"):
      got, want = getattr(cached, name)[key], getattr(decoded, name)[key]
      assert got.dtype == want.dtype and np.array_equal(got, want)
  assert (cached.num_train, cached.num_validation, cached.num_test) == (1080, 120, 200)
  # The slices are TFDS's own sub-splits (train[:N] its first N examples, in order).
  builder, supervised = sources.get_builder(tiny_config.data), sources._supervised  # pylint: disable=protected-access
  for name, split in (("train", "train[:1080]"), ("validation", "train[1080:]")):
    tfds_arrays = pipeline.to_arrays(supervised(builder, split, 0)[0], 10, name)
    assert all(np.array_equal(getattr(cached, name)[k], tfds_arrays[k]) for k in ("image", "label"))
  # Other caps and validation fractions are slices of the same files.
  tiny_config.data.max_eval_examples, tiny_config.data.max_train_examples = 50, 300
  capped = sources.load_splits(tiny_config.data)
  assert (capped.num_train, capped.num_validation, capped.num_test) == (300, 50, 50)
  assert np.array_equal(capped.validation["image"], cached.validation["image"][:50])
  assert _cache_files(data_dir) == files
  tiny_config.data.max_train_examples = 0
  # A torn cache file is ignored (that split decoded again); a dataset prepared again (its files change) is
  # decoded again whole.
  tiny_config.data.max_eval_examples = 0
  calls = []
  supervised = sources._supervised  # pylint: disable=protected-access
  monkeypatch.setattr(sources, "_supervised", lambda *a: calls.append(a[1]) or supervised(*a))
  with open(files[0], "wb") as f:
    f.write(b"PK torn")
  again = sources.load_splits(tiny_config.data)
  assert calls == ["test"] and np.array_equal(again.test["image"], decoded.test["image"])
  prepared = os.path.dirname(os.path.dirname(files[0]))
  record = next(n for n in os.listdir(prepared) if "train.tfrecord" in n)
  os.utime(os.path.join(prepared, record), ns=(1, 1))
  calls.clear()
  again = sources.load_splits(tiny_config.data)
  assert sorted(calls) == ["test", "train"]
  assert np.array_equal(again.train["image"], decoded.train["image"])


def test_a_data_dir_that_cannot_hold_the_cache_is_read_through_tensorflow(tmp_path, monkeypatch, tiny_config):
  from cnn_val import rundir
  def full(*args, **kwargs):
    raise OSError(28, "No space left on device")
  monkeypatch.setattr(rundir, "atomically", full)
  monkeypatch.setattr(sources, "_warned_no_cache", False)
  from tests.conftest import write_tiny_source
  data_dir = str(tmp_path / "data")
  fashion_mnist_offline.prepare(data_dir, source_dir=write_tiny_source(str(tmp_path / "source")))
  tiny_config.data.data_dir = data_dir
  splits = sources.load_splits(tiny_config.data)
  assert (splits.num_train, splits.num_validation, splits.num_test) == (1080, 120, 200)
  assert _cache_files(data_dir) == [] and sources._warned_no_cache  # pylint: disable=protected-access
