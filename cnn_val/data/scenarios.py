"""Fault scenarios: deterministic, seeded transforms of any dataset that reproduce why validation stagnates.

`apply(scenario_config, splits, num_classes)` takes the splits as numpy arrays ({'image': uint8 [N,H,W,C],
'label': int [N]} per split name) and returns new arrays; nothing else in the run changes. Fields of
`config.data.scenario` (all off by default; `seed` fixes the fault, independently of the training seed):

  orientation_pairs  ((a, b), ...): class b becomes "class a upside down": every class-b example, in every
                     split, is replaced by a vertically flipped class-a image of the same split (drawn with
                     replacement). A vertical flip or a large rotation then maps a and b into each other,
                     so augmentation with them destroys the label.
  imbalance_ratio    rho > 1: long-tailed training set. With `minority_classes` empty, class c keeps
                     n_max * rho ** (-c / (K - 1)) examples (an exponential tail over the class order); else
                     the listed classes keep n_max / rho and the rest all. Validation and test stay balanced.
  label_noise        rate in [0, 1): that fraction of training labels is replaced, `label_noise_kind`
                     'symmetric' (a uniformly drawn *other* class) or 'pair' (c -> c + 1 mod K).
  train_brightness, train_contrast   lighting shift: training images only are multiplied by
                     `train_brightness` (< 1 darker) and their deviations from each image's mean by
                     `train_contrast` (< 1 flatter); validation and test keep the original lighting.
  duplicates         n: n validation examples copied (exact, with their labels) into training.
  shortcut_classes, shortcut_brightness   a lighting shortcut: training images of these classes only are
                     multiplied by `shortcut_brightness`; validation and test keep their lighting, so a model
                     that learned "this lighting means this class" loses it there.
  near_duplicates    n: n validation examples copied into training, each moved by one pixel (up, down, left
                     or right) and given Gaussian noise of 4 grey levels: leakage no byte comparison sees.
  missing_classes    (c, ...): every training example of these classes is removed; validation and test
                     keep them (a class the model never sees).
  colorize           s in (0, 1]: a coloured variant of a grayscale dataset, in every split: each image is
                     tinted with a hue drawn uniformly for it, at saturation s (pixel = grey x the tint's RGB,
                     value 1), so colour carries no information about the class.
  colour_shortcut_classes, colour_shortcut_hue   a colour shortcut on the coloured variant: training images
                     of these classes all get this hue (in [0, 1): 0 red, 1/3 green, 2/3 blue); validation and
                     test keep uniformly drawn hues, so a model that learned "red means this class" loses it.
A reduced training set is `config.data.max_train_examples`.
"""

from __future__ import annotations

import numpy as np

from cnn_val import audit

LABEL_NOISE_KINDS = ("symmetric", "pair")


def _fail(field: str, value, expected: str):
  raise ValueError(f"config.data.scenario.{field}={value!r}: expected {expected}.")


def validate(scenario, num_classes: int | None = None) -> None:
  """Checks the fields (class indices too once `num_classes` is known)."""
  in_range = lambda c: 0 <= int(c) < (num_classes if num_classes is not None else 2**31)
  for pair in scenario.orientation_pairs:
    if len(pair) != 2 or pair[0] == pair[1] or not all(in_range(c) for c in pair):
      _fail("orientation_pairs", scenario.orientation_pairs,
            f"pairs (a, b) of two different classes in [0, {num_classes or 'K'})")
  if scenario.imbalance_ratio and scenario.imbalance_ratio < 1:
    _fail("imbalance_ratio", scenario.imbalance_ratio, "0 (off) or a ratio >= 1 (n_max / n_min)")
  if any(not in_range(c) for c in scenario.minority_classes):
    _fail("minority_classes", scenario.minority_classes, f"classes in [0, {num_classes or 'K'})")
  if not 0 <= scenario.label_noise < 1:
    _fail("label_noise", scenario.label_noise, "a rate in [0, 1)")
  if scenario.label_noise_kind not in LABEL_NOISE_KINDS:
    _fail("label_noise_kind", scenario.label_noise_kind, f"one of {list(LABEL_NOISE_KINDS)}")
  for field in ("train_brightness", "train_contrast"):
    if not scenario[field] > 0:
      _fail(field, scenario[field], "a positive factor (1 = unchanged)")
  missing = tuple(scenario.get("missing_classes", ()))
  if any(not in_range(c) for c in missing):
    _fail("missing_classes", missing, f"classes in [0, {num_classes or 'K'}) to remove from training")
  shortcut = tuple(scenario.get("shortcut_classes", ()))
  if any(not in_range(c) for c in shortcut):
    _fail("shortcut_classes", shortcut, f"classes in [0, {num_classes or 'K'}) whose training images are relit")
  if not scenario.get("shortcut_brightness", 1.0) > 0:
    _fail("shortcut_brightness", scenario.shortcut_brightness, "a factor > 0 (< 1 darker)")
  colorize = scenario.get("colorize", 0.0)
  if not 0 <= colorize <= 1:
    _fail("colorize", colorize, "0 (off) or a saturation in (0, 1] for the coloured variant")
  colour_shortcut = tuple(scenario.get("colour_shortcut_classes", ()))
  if colour_shortcut and not colorize:
    _fail("colour_shortcut_classes", colour_shortcut, "() unless config.data.scenario.colorize > 0 (the "
          "shortcut is a hue of the coloured variant)")
  if any(not in_range(c) for c in colour_shortcut):
    _fail("colour_shortcut_classes", colour_shortcut, f"classes in [0, {num_classes or 'K'}) whose training "
          f"images all get colour_shortcut_hue")
  if not 0 <= scenario.get("colour_shortcut_hue", 0.0) < 1:
    _fail("colour_shortcut_hue", scenario.colour_shortcut_hue, "a hue in [0, 1) (0 red, 1/3 green, 2/3 blue)")
  if scenario.get("near_duplicates", 0) < 0:
    _fail("near_duplicates", scenario.near_duplicates, "0 (off) or a count of validation examples")
  if scenario.duplicates < 0:
    _fail("duplicates", scenario.duplicates, "0 (off) or a count of validation examples")


def active(scenario) -> bool:
  return bool(scenario.orientation_pairs or scenario.imbalance_ratio > 1 or scenario.label_noise
              or scenario.train_brightness != 1 or scenario.train_contrast != 1 or scenario.duplicates
              or scenario.get("missing_classes", ()) or scenario.get("near_duplicates", 0)
              or (scenario.get("shortcut_classes", ()) and scenario.get("shortcut_brightness", 1.0) != 1)
              or scenario.get("colorize", 0.0))


def _take(arrays: dict, idx) -> dict:
  return {k: v[idx] for k, v in arrays.items()}


def orientation(arrays: dict, pairs, rng) -> dict:
  images = arrays["image"].copy()
  for a, b in pairs:
    sources, targets = np.flatnonzero(arrays["label"] == a), np.flatnonzero(arrays["label"] == b)
    if len(sources) and len(targets):
      images[targets] = arrays["image"][rng.choice(sources, len(targets))][:, ::-1]
  return {**arrays, "image": images}


def long_tail(arrays: dict, num_classes: int, rho: float, minority, rng) -> dict:
  labels = arrays["label"]
  counts = np.bincount(labels, minlength=num_classes)
  n_max = counts.max()
  if minority:
    keep_n = {c: (int(np.ceil(n_max / rho)) if c in set(map(int, minority)) else counts[c])
              for c in range(num_classes)}
  else:
    keep_n = {c: int(np.ceil(n_max * rho ** (-c / max(num_classes - 1, 1)))) for c in range(num_classes)}
  keep = [rng.permutation(np.flatnonzero(labels == c))[:keep_n[c]] for c in range(num_classes)]
  return _take(arrays, np.sort(np.concatenate(keep)))


def noisy_labels(arrays: dict, num_classes: int, rate: float, kind: str, rng) -> dict:
  labels = arrays["label"].copy()
  flip = np.flatnonzero(rng.random(len(labels)) < rate)
  if kind == "pair":
    labels[flip] = (labels[flip] + 1) % num_classes
  else:  # a uniformly drawn other class
    labels[flip] = (labels[flip] + rng.integers(1, num_classes, len(flip))) % num_classes
  return {**arrays, "label": labels.astype(arrays["label"].dtype)}


def lighting(arrays: dict, brightness: float, contrast: float) -> dict:
  images = arrays["image"].astype(np.float32)
  mean = images.mean(axis=(1, 2, 3), keepdims=True)
  images = ((images - mean) * contrast + mean) * brightness
  return {**arrays, "image": np.clip(np.round(images), 0, 255).astype(arrays["image"].dtype)}


def hue_tints(hues: np.ndarray, saturation: float) -> np.ndarray:
  """RGB multipliers `[N, 3]` of the colours (hue, saturation, value 1): HSV to RGB, as colorsys computes it."""
  k = (np.asarray([5.0, 3.0, 1.0])[None] + 6.0 * np.asarray(hues, np.float64)[:, None]) % 6.0
  return 1.0 - saturation * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)


def colourize(arrays: dict, saturation: float, rng, fixed_classes=(), fixed_hue: float = 0.0) -> dict:
  """Grayscale images tinted, each with a uniformly drawn hue (`fixed_hue` for the examples of
  `fixed_classes`): uint8 `[N, H, W, 3]`."""
  if arrays["image"].shape[-1] != 1:
    raise ValueError(f"config.data.scenario.colorize: the dataset's images have {arrays['image'].shape[-1]} "
                     f"channels; the coloured variant is made from grayscale (1-channel) images.")
  hues = rng.random(len(arrays["label"]))
  if fixed_classes:
    hues[np.isin(arrays["label"], list(fixed_classes))] = fixed_hue
  tints = hue_tints(hues, saturation).astype(np.float32)
  images = arrays["image"].astype(np.float32) * tints[:, None, None, :]
  return {**arrays, "image": np.clip(np.round(images), 0, 255).astype(np.uint8)}


def duplicate(train: dict, validation: dict, n: int, rng) -> dict:
  idx = rng.choice(len(validation["label"]), min(n, len(validation["label"])), replace=False)
  copied = _take(validation, idx)
  return {k: np.concatenate([train[k], copied[k].astype(train[k].dtype)]) for k in train}


NEAR_DUPLICATE_NOISE = 4.0  # grey levels (of 255), the standard deviation of the copies' noise


def near_duplicate(train: dict, validation: dict, n: int, rng) -> dict:
  idx = rng.choice(len(validation["label"]), min(n, len(validation["label"])), replace=False)
  images = validation["image"][idx]
  moves = rng.integers(0, 4, len(idx))  # up, down, left or right
  shifted = images.copy()
  for k, (dy, dx) in enumerate(((-1, 0), (1, 0), (0, -1), (0, 1))):
    shifted[moves == k] = audit.shift_images(images[moves == k], dy, dx)
  noisy = np.clip(shifted + rng.normal(0.0, NEAR_DUPLICATE_NOISE, shifted.shape), 0, 255).astype(images.dtype)
  copied = {**_take(validation, idx), "image": noisy}
  return {k: np.concatenate([train[k], copied[k].astype(train[k].dtype)]) for k in train}


def apply(scenario, splits: dict[str, dict], num_classes: int) -> dict[str, dict]:
  """The scenario's splits ({'train': ..., 'validation': ..., optionally 'test': ...} of numpy arrays)."""
  validate(scenario, num_classes)
  rng = np.random.default_rng(scenario.seed)
  out = dict(splits)
  if scenario.orientation_pairs:
    out = {name: orientation(arrays, scenario.orientation_pairs, rng) for name, arrays in out.items()}
  if scenario.get("colorize", 0.0):  # every split coloured, the shortcut's hue in training only
    out = {name: colourize(arrays, scenario.colorize, rng,
                           scenario.get("colour_shortcut_classes", ()) if name == "train" else (),
                           scenario.get("colour_shortcut_hue", 0.0))
           for name, arrays in out.items()}
  train = out["train"]
  if scenario.imbalance_ratio > 1:
    train = long_tail(train, num_classes, scenario.imbalance_ratio, scenario.minority_classes, rng)
  if scenario.label_noise:
    train = noisy_labels(train, num_classes, scenario.label_noise, scenario.label_noise_kind, rng)
  if scenario.train_brightness != 1 or scenario.train_contrast != 1:
    train = lighting(train, scenario.train_brightness, scenario.train_contrast)
  if scenario.duplicates:
    train = duplicate(train, out["validation"], scenario.duplicates, rng)
  if scenario.get("shortcut_classes", ()) and scenario.get("shortcut_brightness", 1.0) != 1:
    relit = np.isin(train["label"], list(scenario.shortcut_classes))
    images = train["image"].copy()
    images[relit] = lighting({"image": images[relit]}, scenario.shortcut_brightness, 1.0)["image"]
    train = {**train, "image": images}
  if scenario.get("near_duplicates", 0):
    train = near_duplicate(train, out["validation"], scenario.near_duplicates, rng)
  if scenario.get("missing_classes", ()):
    train = _take(train, ~np.isin(train["label"], list(scenario.missing_classes)))
  out["train"] = train
  return out
