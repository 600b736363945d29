"""What a run's config means beyond the run itself (config dicts, as config.json holds them): which fields may change
when a run is resumed, the fields added after old runs were made and their neutral values, the key the runs of one
population share, and the fields an LR range test depends on (lr_find.json's record). rundir.py reads and writes
the files; this module compares what is in them.
"""

from __future__ import annotations

import copy

from cnn_val import augment

# Fields that may change when a run is resumed: they do not change what is computed (the device count
# changes results only to float round-off).
RESUMABLE_CHANGES = frozenset({"log_every_steps", "data.data_dir", "num_devices", "cpu_devices", "doctor",
                               "preflight", "signals", "train_eval_examples", "profile_steps", "steps_per_call",
                               "lr_range_test"})

# Fields added after runs were made, with the value that reproduces the model those runs trained.
FIELDS_ADDED_LATER = {"model.width_multiplier": 1.0, "model.extra_blocks": 0, "data.scenario.missing_classes": [],
                      "data.scenario.near_duplicates": 0, "model.kernel_init": "lecun_normal",
                      "data.scenario.shortcut_classes": [], "data.scenario.shortcut_brightness": 1.0,
                      "early_stopping_patience": 0, "ema_decay": 0.0, "augment.hue": None,
                      "augment.saturation": None, "data.exclude_train_examples": "",
                      "data.scenario.colorize": 0.0, "data.scenario.colour_shortcut_classes": [],
                      "data.scenario.colour_shortcut_hue": 0.0, "data.train_fraction": 1.0,
                      "data.relabel_train_examples": "", "imbalance.logit_adjustment": 0.0,
                      "data.noise_transition": "", "imbalance.deferred_epochs": 0, "lr_range_test": False,
                      "gce_q": 0.0}

# The config fields in which the runs of one population (cnn_val/population.py) may differ: they enter the
# train step as numbers, not as its structure (optim.POPULATION_FIELDS, steps.MODEL_POPULATION_FIELDS, the
# class weights and the augmentation's magnitudes: steps.population_train_chunk), as long as the members agree
# on which rates are 0 (POPULATION_ZEROS: a rate of 0 leaves its part out) and on the augmentation's structure.
POPULATION_FIELDS = ("seed", "optim.learning_rate", "optim.weight_decay", "model.dropout_rate",
                     "model.block_dropout_rate", "imbalance.class_weighting", "imbalance.beta") + tuple(
                         f"augment.{f}" for f in augment.MAGNITUDES + ("zoom_range",))
POPULATION_ZEROS = ("optim.weight_decay", "model.dropout_rate", "model.block_dropout_rate")


def population_group(config: dict) -> str:
  """The key that the runs of one population share (config dicts): every field outside POPULATION_FIELDS,
  whether each rate or decay of POPULATION_ZEROS is 0 (0 leaves its part out of the step), and the resolved
  augmentation's `augment.structure` (which transforms run: a magnitude set explicitly and the same one from a
  preset group alike). The ablation engine groups runs by it; `population.check_population` refuses others."""
  def role(field, value):
    return bool(value) if field in POPULATION_ZEROS else None
  flat = flatten(config)
  return repr((sorted((k, role(k, v) if k in POPULATION_FIELDS else v) for k, v in flat.items()),
               augment.structure(augment.from_config(config.get("augment", {})))))


def with_fields_added_later(config: dict) -> dict:
  """A copy of a config dict (an old run's config.json) with every FIELDS_ADDED_LATER field it lacks set to
  its neutral value, the value under which the run trained: overrides of those fields then apply to it."""
  out = copy.deepcopy(config)
  for field, neutral in FIELDS_ADDED_LATER.items():
    *parents, last = field.split(".")
    node = out
    for part in parents:
      node = node.setdefault(part, {})
    node.setdefault(last, copy.deepcopy(neutral))
  return out


def flatten(d, prefix=""):
  """{'a': {'b': 1}} -> {'a.b': 1}: a config dict as dotted fields."""
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def config_changes(old: dict, new: dict) -> dict:
  """{field: (old value, new value)} for the fields whose change would change what a run computes: a field
  added since `old` was written counts at its neutral value (FIELDS_ADDED_LATER), RESUMABLE_CHANGES never."""
  # A run from before a field existed ran without it; both sides may predate it (a sweep of an old run).
  old_flat, new_flat = flatten(with_fields_added_later(old)), flatten(with_fields_added_later(new))
  return {k: (old_flat.get(k), new_flat.get(k)) for k in sorted(old_flat.keys() | new_flat.keys())
          if old_flat.get(k) != new_flat.get(k) and k not in RESUMABLE_CHANGES}


# Fields that do not change an LR range test (lr_range.sweep), so lr_find.json does not record them: the rate and
# its schedule (the sweep replaces them), the seed (the test characterises the recipe), the run's length, and
# how it is evaluated, logged and computed. Every other field is recorded with the sweep (`swept_config`).
LR_FIND_IGNORES = frozenset({
    "seed", "num_epochs", "optim.learning_rate", "optim.schedule", "optim.decay_steps", "optim.decay_rate",
    "optim.staircase", "optim.warmup_epochs", "optim.cosine_alpha", "eval_batch_size", "eval_every_epochs",
    "early_stopping_patience", "ema_decay", "data.test_split", "data.max_eval_examples", "data.download",
    "model.conv_impl", "model.pool_impl", "micro_batch_size",
    "gce_q"}) | RESUMABLE_CHANGES  # (the range test sweeps the cross-entropy: lr_range.py)


def swept_config(config: dict) -> dict:
  """The dotted fields of a config dict that an LR range test depends on (all but LR_FIND_IGNORES), as lr_find.json
  records them beside the sweep."""
  flat = flatten(with_fields_added_later(config))
  return {k: flat[k] for k in sorted(flat) if k not in LR_FIND_IGNORES}


def lr_find_mismatch(lr_find: dict | None, config: dict) -> dict:
  """{field: (swept value, run's value)} where lr_find.json was measured for another config than the run's config
  dict (a test `python -m cnn_val.lr_find --config=OTHER --workdir=W` wrote into W): such a test says nothing about
  the run's rate. Fields either side lacks count as equal; {} for a file without a recorded config (an older
  version's), which is trusted."""
  recorded = (lr_find or {}).get("config")
  if not isinstance(recorded, dict):
    return {}
  ours = swept_config(config)
  return {k: (v, ours[k]) for k, v in sorted(recorded.items()) if k in ours and ours[k] != v}
