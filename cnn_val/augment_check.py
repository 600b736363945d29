"""Does each augmentation keep the labels? A test on the data itself (`augment_check.json`), before training.

A flip turns a 2 into no digit at all, a rotation of 180 degrees a 6 into a 9; a CNN trained with such an
augmentation loses accuracy with no other symptom in its curves (its training accuracy, measured on the
images as they are, looks healthy). Whether a transform changes what the images mean is a property of the
data, so it is measured on the data: for each geometric transform the run's augmentation turns on (flips,
rotation, shifts, shear, zoom), alone, a 1-nearest-neighbour classifier on the pixels of a sample of the
training split labels a sample of the validation split, and up to MAX_TRAIN_QUERIES of the training images
themselves (each leaving itself and its own copy out: more images to judge where validation is small), twice:
with the training images as reference, and with the same images plus one transformed copy of each, under its
own label (what training with the augmentation teaches). A transform that keeps the labels adds neighbours of
the right class, or none nearer than the originals; one that maps a class onto another puts transformed images
of one class nearest to images of the other. Paired on the same images:
  lost, won        images judged (validation, and training images left out) the copies make wrong / right
  error_increase   (lost - won) / errors without the copies (at least 1): the share by which they raise it
  p_value          one-sided exact binomial (McNemar's) test of lost against won (scipy); indicative, not
                   exact: the queries share the reference, so one copy can move several of them
  pairs            (true class, class of the transformed neighbour, count) of the lost images
  recognised       accuracy of the same classifier (no copies) on transformed validation images, against
                   `accuracy` on the validation images as they are: how much of a class survives the transform
A transform is label-destroying when p_value < P_VALUE and error_increase >= ERROR_INCREASE (calibrated on
Fashion-MNIST and MNIST digits: README, The doctor, "Augmentation that changes the labels"). The doctor's
`harmful_augmentation` rule reads it.

Images larger than knn.MAX_SIDE pixels a side are block-averaged down first (the test asks what the shapes mean,
not their detail); the samples are drawn with a fixed seed, so every run of a sweep gets the same result.
"""

from __future__ import annotations

import functools
import time

from absl import logging
import jax
import numpy as np

from cnn_val import audit, augment, knn, rundir

MAX_TRAIN = 10_000
MAX_VALIDATION = 2_000
MAX_TRAIN_QUERIES = 3_000  # training images also judged, each left out with its copy
P_VALUE = 0.01
ERROR_INCREASE = 0.2

# The transforms tested, each as the Augment fields that turn it on alone (flips are applied to every copy:
# the originals already stand for the unflipped half).
_GEOMETRIC = {"horizontal_flip": ("horizontal_flip",), "vertical_flip": ("vertical_flip",),
              "rotation_range": ("rotation_range",), "shift": ("width_shift_range", "height_shift_range"),
              "shear_range": ("shear_range",), "zoom_range": ("zoom_range",)}


def transforms(params) -> dict[str, dict]:
  """The geometric transforms `params` (an `augment.Augment`) turns on: {name: {field: value}}."""
  out = {}
  for name, fields in _GEOMETRIC.items():
    values = {f: getattr(params, f) for f in fields}
    if any(v not in (0, 0.0, False, (1.0, 1.0)) for v in values.values()):
      out[name] = values
  return out


def _transform(images: np.ndarray, name: str, values: dict, factor: int, fill_mode: str, cval: float):
  """One transformed copy of each image: flipped, or warped by the affine transform at its largest magnitude
  with a random sign (rotation by +-min(r, 180) degrees, shifts by +-s in both directions, shear by +-s, zoom by one end
  of the range on each axis): what the augmentation does at its most."""
  if name == "horizontal_flip":
    return images[:, :, ::-1]
  if name == "vertical_flip":
    return images[:, ::-1]
  n, h, w = images.shape[:3]
  rng = np.random.default_rng(knn.SAMPLE_SEED)
  sign = lambda: rng.choice([-1.0, 1.0], n).astype(np.float32)
  zero = np.zeros(n, np.float32)
  theta, tx, ty, shear = zero, zero, zero, zero
  zx = zy = np.ones(n, np.float32)
  if name == "rotation_range":  # a range past 180 degrees draws 180 (turned over) at its most
    theta = sign() * min(values["rotation_range"], 180.0)
  elif name == "shift":
    sh, sw = values["height_shift_range"], values["width_shift_range"]
    tx = sign() * (sh * h if sh < 1 else sh / factor)
    ty = sign() * (sw * w if sw < 1 else sw / factor)
  elif name == "shear_range":
    shear = sign() * values["shear_range"]
  elif name == "zoom_range":
    lo, hi = values["zoom_range"]
    zx, zy = (np.where(sign() > 0, hi, lo).astype(np.float32) for _ in range(2))
  return np.asarray(_warp_all(images, (theta, tx, ty, shear, zx, zy), cval, fill_mode=fill_mode), np.float32)


@functools.partial(jax.jit, static_argnames=("fill_mode",))
def _warp_all(images, draws, cval, *, fill_mode: str):
  """Each image warped by Keras' matrix of its own (theta, tx, ty, shear, zx, zy): compiled once a shape."""
  h, w = images.shape[1:3]
  matrices = jax.vmap(lambda *a: augment.keras_matrix(*a, h, w))(*draws)
  return jax.vmap(lambda image, m: augment.warp(image, m, fill_mode=fill_mode, cval=cval))(images, matrices)


def check(train: dict, validation: dict, params, num_classes: int, *, max_train: int = MAX_TRAIN,
          max_validation: int = MAX_VALIDATION, max_train_queries: int = MAX_TRAIN_QUERIES) -> dict | None:
  """The test of each geometric transform `params` turns on (module docstring); None when it turns on none, or
  a split is empty. `train`, `validation`: {'image': [N, H, W, C] uint8 (or floats on [0, 1]), 'label': int
  [N]}."""
  named = transforms(params)
  if not named or not len(train["label"]) or not len(validation["label"]):
    return None
  from scipy import stats  # pylint: disable=import-outside-toplevel  (0.7 s to import: only where it runs)
  start = time.perf_counter()
  rng = np.random.default_rng(knn.SAMPLE_SEED)
  t_idx = knn.sample(len(train["label"]), max_train, rng)
  v_idx = knn.sample(len(validation["label"]), max_validation, rng)
  x_train, factor = knn.downsample(train["image"], t_idx)
  x_val, _ = knn.downsample(validation["image"], v_idx)
  y_train = np.asarray(train["label"])[t_idx].astype(np.int64)
  y_val = np.asarray(validation["label"])[v_idx].astype(np.int64)
  # The queries: the validation sample, and (leave one out) a sample of the training images themselves, each
  # kept from taking itself or its own copy: more images to judge where validation is small.
  n_train = len(t_idx)
  own = knn.sample(n_train, max_train_queries, rng)
  queries = np.concatenate([x_val, x_train[own]])
  y_queries = np.concatenate([y_val, y_train[own]])
  none = np.full((len(v_idx), 2), -1)
  exclude = np.concatenate([none, np.stack([own, own + n_train], axis=1)])
  base = knn.nearest_labels(x_train, y_train, queries, exclude[:, :1])
  base_right = base == y_queries
  errors = int(np.sum(~base_right))
  result = {"method": "1-nearest neighbour on the pixels, without and with one transformed copy of each "
                      "training image under its own label, on the same queries: the validation sample and, "
                      "leaving each out with its copy, a sample of the training images",
            "train_examples": int(n_train), "validation_examples": int(len(v_idx)), "train_queries": int(len(own)),
            "image_side": [int(d) for d in x_train.shape[1:3]], "errors": errors, "queries": int(len(queries)),
            "accuracy": float(np.mean(base_right[:len(v_idx)])),
            "thresholds": {"p_value": P_VALUE, "error_increase": ERROR_INCREASE}, "transforms": {}}
  for name, values in named.items():
    copies = _transform(x_train, name, values, factor, params.fill_mode, params.cval)
    with_copies = knn.nearest_labels(np.concatenate([x_train, copies]), np.concatenate([y_train, y_train]), queries,
                                  exclude)
    right = with_copies == y_queries
    lost_mask = base_right & ~right
    lost, won = int(np.sum(lost_mask)), int(np.sum(~base_right & right))
    p_value = float(stats.binomtest(lost, lost + won, 0.5, alternative="greater").pvalue) if lost + won else 1.0
    pairs = {}
    for true, pred in zip(y_queries[lost_mask].tolist(), with_copies[lost_mask].tolist()):
      pairs[(true, pred)] = pairs.get((true, pred), 0) + 1
    seen = _transform(x_val, name, values, factor, params.fill_mode, params.cval)
    increase = (lost - won) / max(errors, 1)
    result["transforms"][name] = {
        "values": {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()},
        "lost": lost, "won": won, "errors_with_copies": errors + lost - won, "error_increase": increase,
        "p_value": p_value, "label_destroying": bool(p_value < P_VALUE and increase >= ERROR_INCREASE),
        "pairs": [[t, p, c] for (t, p), c in sorted(pairs.items(), key=lambda kv: -kv[1])],
        "lost_by_class": np.bincount(y_queries[lost_mask], minlength=num_classes).tolist(),
        "recognised": float(np.mean(knn.nearest_labels(x_train, y_train, seen) == y_val))}
  result["seconds"] = time.perf_counter() - start
  return result


def cached_check(arrays: dict[str, dict], params, num_classes: int) -> dict | None:
  """`check` on the training and validation splits of `arrays`, shared by the runs of a sweep that train the
  same data with the same transforms (`audit.cached`); None when `params` turns on no geometric transform (or a
  split is empty)."""
  if not transforms(params):
    return None
  splits = {"train": arrays["train"], "validation": arrays["validation"]}
  return audit.cached("augment-check", lambda: check(splits["train"], splits["validation"], params, num_classes),
                      splits, [num_classes, key(params)], (__file__, augment.__file__, knn.__file__))


def write(workdir: str, report: dict) -> None:
  """Writes `report` to the run's augment_check.json and logs what it found (a warning for each transform that
  changes the labels: the doctor reports harmful_augmentation)."""
  rundir.write_json(workdir, rundir.AUGMENT_CHECK_FILE, report)
  destroying = [f"{name} (the nearest-neighbour error +{100 * t['error_increase']:.0f}%, p = {t['p_value']:.1g})"
                for name, t in report["transforms"].items() if t["label_destroying"]]
  logging.log(logging.WARNING if destroying else logging.INFO, "Augmentation check of %s (%.1f s): %s", workdir,
              report["seconds"], "these transforms change what the images mean: " + "; ".join(destroying)
              + " (the doctor reports harmful_augmentation)" if destroying else "every transform keeps the labels")


def key(params) -> list:
  """What the check of `params` depends on besides the data: its transforms and how the warp fills."""
  return [{k: {f: list(v) if isinstance(v, tuple) else v for f, v in values.items()}
           for k, values in transforms(params).items()}, params.fill_mode, params.cval]


def _check_run_data(config, params) -> dict:
  from cnn_val.data import loading  # pylint: disable=import-outside-toplevel
  splits, arrays = loading.load_data(config)
  return cached_check(arrays, params, splits.num_classes)


def write_for_run(workdir: str) -> dict | None:
  """The check for an existing run directory, from its own config.json and data, written to its
  augment_check.json (a run trained before the check existed; the doctor reads it on its next diagnosis).
  None, and nothing written, where the run's augmentation turns on no geometric transform."""
  from cnn_val.ablate.sweep import stored_config  # pylint: disable=import-outside-toplevel
  config = stored_config(workdir)
  params = augment.from_config(config.augment)
  if not transforms(params):
    return None
  report = _check_run_data(config, params)
  if report is not None:
    write(workdir, report)
  return report


def flips_change_labels(workdir: str) -> dict:
  """The check of horizontal flips alone on a run's data, whatever its own augmentation: the doctor asks it
  before it offers an augmentation preset with flips (a colour dataset of digits or text is not
  flip-invariant). Nothing is written."""
  from cnn_val.ablate.sweep import stored_config  # pylint: disable=import-outside-toplevel
  config = stored_config(workdir)
  params = augment.Augment(horizontal_flip=True)
  report = _check_run_data(config, params)
  return report["transforms"]["horizontal_flip"] if report else {"label_destroying": False}


def main(argv):
  from absl import flags  # pylint: disable=import-outside-toplevel
  del argv
  for workdir in flags.FLAGS.workdir:
    report = write_for_run(workdir)
    if report is None:
      print(f"{workdir}: its augmentation turns on no geometric transform; nothing to check.")
      continue
    for name, t in report["transforms"].items():
      print(f"{workdir}: {name}: {t['lost']} images lost, {t['won']} won, of {report['queries']} judged; error "
            f"{report['errors']} -> {t['errors_with_copies']} ({100 * t['error_increase']:+.0f}%), p = "
            f"{t['p_value']:.2g}: {'changes the labels' if t['label_destroying'] else 'keeps the labels'}")
    print(f"{workdir}/{rundir.AUGMENT_CHECK_FILE} written ({report['seconds']:.1f} s).")


if __name__ == "__main__":
  from absl import app, flags  # pylint: disable=import-outside-toplevel,ungrouped-imports
  flags.DEFINE_multi_string("workdir", None, "Run directories to check (their config.json and data).",
                            required=True)
  app.run(main)
