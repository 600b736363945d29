"""Dataset audit (`audit.json`): class counts, image statistics and their drift, cross-split duplicates.

Computed once per run from the splits as the model sees them (after any fault scenario), in seconds for
Fashion-MNIST. Per split: class counts, the imbalance ratio (largest / smallest present class), classes
with no example, the label and pixel ranges, and per-image brightness (mean pixel, on [0, 1]), RMS contrast
(pixel standard deviation) and per-channel means, each summarised with quantiles and a histogram. Drift of
validation and test against train, per statistic: the two-sample Kolmogorov-Smirnov distance (the largest
gap between the two empirical distributions, in [0, 1]) and the standardised mean difference, with the
training examples weighted to the other split's class mix (a class imbalance alone is not drift). Duplicates:
validation/test images whose exact bytes also occur in train, and near duplicates: those whose coarse
thumbnail (block means on a grid of about 8x8), at the best of the nine shifts by up to one pixel, lies within
NEAR_RMS grey levels (RMS) of the thumbnail of a training image of the same class (a copy moved by a pixel
and lightly noised is a near duplicate; without the shifts its thumbnail lies 15-38 grey levels away). The
pixel reference (`pixel_reference`): the validation accuracy of a 1-nearest-neighbour classifier on the pixels
(knn.reference), what a model that learns nothing beyond lookup reaches: the doctor's yardstick for the CNN.

Thresholds (module constants, used by `diagnose.py`; measured on Fashion-MNIST's random 54k/6k split and on
the fault scenarios, README "Diagnosis"):
  DRIFT_KS          0.1: same-distribution splits measured <= 0.02; a lighting shift measured >= 0.5
  LEAKAGE_FRACTION  0.01 of validation examples with an exact copy in train
"""

from __future__ import annotations

import hashlib
import json
import os
import time

import numpy as np

from cnn_val import knn, rundir

DRIFT_KS = 0.1
LEAKAGE_FRACTION = 0.01
STATS = ("brightness", "contrast")
HIST_BINS = 20
MAX_DUPLICATE_EXAMPLES = 10
NEAR_RMS = 3.0  # near duplicate: thumbnails within this RMS distance (grey levels of 255)


def image_stats(images: np.ndarray) -> dict[str, np.ndarray]:
  """Per-image brightness, RMS contrast and channel means of uint8 `[N, H, W, C]` images, on [0, 1]."""
  x = images.reshape(len(images), -1, images.shape[-1]).astype(np.float32) / 255.0
  return {"brightness": x.mean(axis=(1, 2)), "contrast": x.std(axis=(1, 2)), "channel_means": x.mean(axis=1)}


def _summary(values: np.ndarray) -> dict:
  q = np.quantile(values, [0.05, 0.25, 0.5, 0.75, 0.95])
  hist, _ = np.histogram(values, bins=HIST_BINS, range=(0.0, 1.0))
  return {"mean": float(values.mean()), "std": float(values.std()),
          "quantiles": {"5": q[0], "25": q[1], "50": q[2], "75": q[3], "95": q[4]},
          "histogram": hist.tolist(), "histogram_range": [0.0, 1.0]}


def _ecdf(values: np.ndarray, weights: np.ndarray, points: np.ndarray) -> np.ndarray:
  order = np.argsort(values, kind="stable")
  cumulative = np.concatenate([[0.0], np.cumsum(weights[order])]) / weights.sum()
  return cumulative[np.searchsorted(values[order], points, side="right")]


def ks_distance(a: np.ndarray, b: np.ndarray, weights_a: np.ndarray | None = None) -> float:
  """Two-sample Kolmogorov-Smirnov statistic max |ECDF_a - ECDF_b|, `a` optionally weighted."""
  weights_a = np.ones(len(a)) if weights_a is None else weights_a
  points = np.concatenate([a, b])
  return float(np.max(np.abs(_ecdf(a, weights_a, points) - _ecdf(b, np.ones(len(b)), points))))


def _smd(a: np.ndarray, b: np.ndarray, weights_a: np.ndarray) -> float:
  mean_a = np.average(a, weights=weights_a)
  pooled = np.sqrt((np.average((a - mean_a) ** 2, weights=weights_a) + b.var()) / 2)
  return float((b.mean() - mean_a) / pooled) if pooled > 0 else 0.0


def class_matching_weights(train_labels: np.ndarray, other_labels: np.ndarray, num_classes: int) -> np.ndarray:
  """Weights that give the training examples the other split's class mix, so that drift measures how
  images differ within classes, not how the class proportions differ (that is class imbalance)."""
  p_train = np.bincount(train_labels, minlength=num_classes) / len(train_labels)
  p_other = np.bincount(other_labels, minlength=num_classes) / max(len(other_labels), 1)
  ratio = np.where(p_train > 0, p_other / np.maximum(p_train, 1e-12), 0.0)
  return ratio[train_labels]


def class_drift(train_stats: dict, train_labels, other_stats: dict, other_labels, num_classes: int) -> dict:
  """Per class, how the images of that class differ between train and the other split: the standardised mean
  difference (other - train, in pooled standard deviations) of brightness, contrast, each channel's mean and,
  for colour images, each channel's share of the image's channel means (`chroma_k`: the colour without the
  lighting, whose spread would otherwise hide a hue that one class has in training only).
  A shortcut (one class lit, coloured or set apart in training only) shows here even when the splits'
  overall distributions match. Returns the per-class values, each class's mean of each statistic in either split
  (`per_class_mean`: 'train' and 'other'), and the largest |SMD| with its class and statistic."""
  train_labels, other_labels = np.asarray(train_labels), np.asarray(other_labels)
  per_class, worst = {}, {"class": None, "statistic": None, "smd": 0.0}
  means = {"train": {}, "other": {}}  # per class and statistic: what a label-noise estimate predicts is mixed in
  channels = train_stats["channel_means"].shape[1]
  named = {"brightness": lambda st: st["brightness"], "contrast": lambda st: st["contrast"]}
  if channels > 1:
    named.update({f"channel_{k}": (lambda st, k=k: st["channel_means"][:, k]) for k in range(channels)})
    share = lambda st, k: st["channel_means"][:, k] / np.maximum(st["channel_means"].sum(axis=1), 1e-6)
    named.update({f"chroma_{k}": (lambda st, k=k: share(st, k)) for k in range(channels)})
  for c in range(num_classes):
    a, b = train_labels == c, other_labels == c
    if a.sum() < 2 or b.sum() < 2:
      continue
    per_class[c], means["train"][str(c)], means["other"][str(c)] = {}, {}, {}
    for stat, get in named.items():
      x, y = get(train_stats)[a], get(other_stats)[b]
      pooled = np.sqrt((x.var() + y.var()) / 2)
      smd = float((y.mean() - x.mean()) / pooled) if pooled > 0 else 0.0
      per_class[c][stat] = round(smd, 4)
      means["train"][str(c)][stat], means["other"][str(c)][stat] = float(x.mean()), float(y.mean())
      if abs(smd) > abs(worst["smd"]):
        worst = {"class": c, "statistic": stat, "smd": round(smd, 4), "train_mean": float(x.mean()),
                 "other_mean": float(y.mean())}
  return {"per_class_smd": {str(c): v for c, v in per_class.items()}, "per_class_mean": means, "worst": worst}


def exact_hashes(images: np.ndarray) -> list[bytes]:
  """One digest of each image's bytes: equal digests, identical images."""
  return [hashlib.blake2b(img.tobytes(), digest_size=12).digest() for img in images]


def thumbnails(images: np.ndarray) -> np.ndarray:
  """Block means on a grid of about 8x8 (pixel scale 0-255), flattened: `[N, cells * C]`."""
  n, h, w, c = images.shape
  f = max(1, min(h, w) // 8)
  crop = images[:, :h // f * f, :w // f * f].astype(np.float32)
  return crop.reshape(n, h // f, f, w // f, f, c).mean(axis=(2, 4)).reshape(n, -1)


SHIFTS = tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1))


def shift_images(images: np.ndarray, dy: int, dx: int) -> np.ndarray:
  """`images` moved by (dy, dx) pixels, the border repeated into the gap."""
  if not dy and not dx:
    return images
  padded = np.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
  h, w = images.shape[1:3]
  return padded[:, 1 - dy:1 - dy + h, 1 - dx:1 - dx + w]


def nearest_same_class(train_images, train_labels, other_images, other_labels) -> tuple[np.ndarray, np.ndarray]:
  """For each image of `other_images`: the index of the nearest training image of its class and the RMS
  distance between their thumbnails, at the best of SHIFTS of the other image (inf where its class has no
  training image). Searching within the class keeps it ~10x cheaper than a search over all of train."""
  train_labels, other_labels = np.asarray(train_labels), np.asarray(other_labels)
  index = np.zeros(len(other_images), np.int64)
  dist = np.full(len(other_images), np.inf)
  train_thumbs = thumbnails(train_images)
  for c in np.unique(other_labels):
    rows, pool = np.flatnonzero(other_labels == c), np.flatnonzero(train_labels == c)
    if not len(pool):
      continue
    for dy, dx in SHIFTS:
      i, d = _nearest(train_thumbs[pool], thumbnails(shift_images(other_images[rows], dy, dx)))
      better = d < dist[rows]
      index[rows[better]], dist[rows[better]] = pool[i[better]], d[better]
  return index, dist


def _nearest(train_thumbs: np.ndarray, other_thumbs: np.ndarray, chunk: int = 512):
  """For each row of `other_thumbs`: the index of, and the RMS distance to, the nearest training thumbnail."""
  train_sq = (train_thumbs ** 2).sum(axis=1)
  index, dist = [], []
  for start in range(0, len(other_thumbs), chunk):
    block = other_thumbs[start:start + chunk]
    d2 = (block ** 2).sum(axis=1)[:, None] + train_sq[None, :] - 2.0 * block @ train_thumbs.T
    i = np.argmin(d2, axis=1)
    index.append(i)
    dist.append(np.sqrt(np.maximum(d2[np.arange(len(block)), i], 0.0) / train_thumbs.shape[1]))
  return np.concatenate(index), np.concatenate(dist)


def _duplicates(train_images, train_labels, other_images, other_labels) -> dict:
  index = {}
  for i, h in enumerate(exact_hashes(train_images)):
    index.setdefault(h, i)
  exact = [(index[h], j) for j, h in enumerate(exact_hashes(other_images)) if h in index]
  nearest, dist = nearest_same_class(train_images, train_labels, other_images, other_labels)
  near = [(int(nearest[j]), int(j)) for j in np.flatnonzero(dist <= NEAR_RMS)]
  out = {}
  for kind, pairs in (("exact", exact), ("near", near)):
    out[kind] = len(pairs)
    out[f"{kind}_fraction"] = len(pairs) / max(len(other_images), 1)
    out[f"{kind}_examples"] = [{"train_index": int(i), "index": int(j)} for i, j in pairs[:MAX_DUPLICATE_EXAMPLES]]
  return out


CACHE_ENV = "CNN_VAL_AUDIT_CACHE"  # a folder; set by the ablation engine for the runs of one sweep


def cached(name: str, compute, splits: dict[str, dict], key, sources: tuple[str, ...],
           cache_dir: str | None = None):
  """`compute()`, reused from `cache_dir` (default: $CNN_VAL_AUDIT_CACHE; none: no cache) when the same data
  was examined before with the same `key` (JSON) by the same code (`sources`, the modules' files): the key
  hashes every array's bytes too, so a run whose data differ in a single pixel or label (another scenario, a
  removed example), or an edited module, computes its own. `name` prefixes the cached file."""
  cache_dir = cache_dir if cache_dir is not None else os.environ.get(CACHE_ENV, "")
  if not cache_dir:
    return compute()
  digest = hashlib.blake2b(digest_size=16)
  for source in sources:
    with open(source, "rb") as f:
      digest.update(f.read())
  digest.update(json.dumps(key).encode())
  for split in sorted(splits):
    for field in ("image", "label"):
      array = np.ascontiguousarray(splits[split][field])
      digest.update(f"{split}/{field}/{array.dtype}/{array.shape}".encode())
      digest.update(array.data)
  path = os.path.join(cache_dir, f"{name}-{digest.hexdigest()}.json")
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError):  # absent, or torn by a kill: computed again
    pass
  report = compute()
  try:  # concurrent workers may both write it: the same content, renamed atomically
    rundir.atomic_write(path, json.dumps(report))
  except OSError:
    pass  # a cache that cannot be written only costs time
  return report


def cached_audit(splits: dict[str, dict], num_classes: int, class_names=(), cache_dir: str | None = None) -> dict:
  """`audit`, through `cached`: the runs of a sweep share it (a 3-seed verification audits its data once)."""
  return cached("audit", lambda: audit(splits, num_classes, class_names), splits,
                [num_classes, list(class_names)], (__file__, knn.__file__), cache_dir)


def audit(splits: dict[str, dict], num_classes: int, class_names=()) -> dict:
  """The audit of `splits` ({'train': {'image', 'label'}, 'validation': ..., optionally 'test'})."""
  start = time.perf_counter()
  result = {"num_classes": num_classes, "class_names": list(class_names), "splits": {}, "drift": {},
            "duplicates": {}, "thresholds": {"drift_ks": DRIFT_KS, "leakage_fraction": LEAKAGE_FRACTION}}
  stats = {}
  for name, arrays in splits.items():
    labels = np.asarray(arrays["label"])
    counts = np.bincount(labels[(labels >= 0) & (labels < num_classes)], minlength=num_classes)
    present = counts[counts > 0]
    stats[name] = image_stats(arrays["image"])
    result["splits"][name] = {
        "count": int(len(labels)),
        "image_shape": [int(d) for d in np.shape(arrays["image"])[1:]],  # [H, W, C] as the model sees them
        "class_counts": counts.tolist(),
        "imbalance_ratio": float(present.max() / present.min()) if len(present) else None,
        "missing_classes": np.flatnonzero(counts == 0).tolist(),
        "labels_out_of_range": int(np.sum((labels < 0) | (labels >= num_classes))),
        "label_range": [int(labels.min()), int(labels.max())] if len(labels) else None,
        "pixel_range": [int(arrays["image"].min()), int(arrays["image"].max())],
        "brightness": _summary(stats[name]["brightness"]),
        "contrast": _summary(stats[name]["contrast"]),
        "channel_means": stats[name]["channel_means"].mean(axis=0).tolist(),
    }
  for name in splits:
    if name == "train":
      continue
    weights = class_matching_weights(splits["train"]["label"], splits[name]["label"], num_classes)
    result["drift"][name] = {
        s: {"ks": ks_distance(stats["train"][s], stats[name][s], weights),
            "standardized_mean_difference": _smd(stats["train"][s], stats[name][s], weights)} for s in STATS}
    result.setdefault("class_drift", {})[name] = class_drift(
        stats["train"], splits["train"]["label"], stats[name], splits[name]["label"], num_classes)
    result["duplicates"][name] = _duplicates(splits["train"]["image"], splits["train"]["label"],
                                             splits[name]["image"], splits[name]["label"])
  if "train" in splits and "validation" in splits:  # what the pixels alone give: the doctor's reference
    result["pixel_reference"] = knn.reference(splits["train"], splits["validation"], num_classes)
  result["seconds"] = time.perf_counter() - start
  return result
