"""Writes a TFDS dataset as the `.npz` that `config.data.name='npz'` trains on (`npz.py`), its splits in TFDS's
order, so that training on the file is training on the dataset:

    python -m cnn_val.data.export_npz --from_tfds=fashion_mnist --out=/tmp/fashion_mnist.npz [--data_dir=DIR]

Run it where TensorFlow and TFDS are; the file then trains where they are not.
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


def main(argv):
  from absl import flags  # pylint: disable=import-outside-toplevel
  del argv
  f = flags.FLAGS
  counts = export_tfds(f.from_tfds, f.out, f.data_dir, f.train_split, f.test_split)
  print(f"{f.out}: {', '.join(f'{k} {v:,}' for k, v in counts.items())} examples of {f.from_tfds!r}; train on it "
        f"with --config.data.name=npz --config.data.root={f.out}")


if __name__ == "__main__":
  from absl import flags  # pylint: disable=g-import-not-at-top
  from cnn_val import cli  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string("from_tfds", "fashion_mnist", "The TFDS dataset to write.")
  flags.DEFINE_string("out", None, "The .npz file to write.", required=True)
  flags.DEFINE_string("data_dir", "", "TFDS data_dir ('' = TFDS's default).")
  flags.DEFINE_string("train_split", "train", "The TFDS split written as train_image/train_label.")
  flags.DEFINE_string("test_split", "test", "The TFDS split written as test_image/test_label ('' = none).")
  cli.run(main)
