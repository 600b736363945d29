"""cnn_val: train CNN image classifiers in JAX/Flax and find out why validation accuracy stagnates.

The public surface, imported on first use (so `import cnn_val` loads neither JAX nor TensorFlow):

  train_and_evaluate(config, workdir)     a run directory, as `python -m cnn_val.main` trains it
  train_population(configs, workdirs)     runs of other seeds, learning rates and weight decays at once
  examine(workdir, verify=False, ...)     the doctor: diagnosis.json and report.md of a run directory
  diagnose(workdir)                       the doctor's rules alone (a dict; writes nothing)
  create_model(model_config, num_classes) the models (`models.SeedCNN`, `SeedCNNDropout`, `ConvNet`, `ResNet`)
  create_optimizer(...), create_schedule(...)   optax chains from `config.optim` or keyword fields
  create_train_state, train_step, eval_step     pure step functions: under `jax.jit` with axis_name=None,
                                                or `jax.pmap` over `parallel.AXIS`
  load_data(config)                       the splits as numpy arrays after scenarios and levers
  Sweep, Arm, run_sweep, aggregate        the ablation engine
and the modules themselves: `cnn_val.models`, `cnn_val.steps`, `cnn_val.optim`, `cnn_val.augment`,
`cnn_val.audit`, `cnn_val.ablate`, `cnn_val.doctor`, ...
"""

import importlib

__version__ = "0.1.0"

_PUBLIC = {
    "train_and_evaluate": "cnn_val.train", "train_population": "cnn_val.population", "examine": "cnn_val.doctor", "diagnose": "cnn_val.doctor",
    "create_model": "cnn_val.models", "create_optimizer": "cnn_val.optim", "create_schedule": "cnn_val.optim",
    "create_train_state": "cnn_val.steps", "train_step": "cnn_val.steps", "eval_step": "cnn_val.steps",
    "load_data": "cnn_val.data.loading", "Sweep": "cnn_val.ablate", "Arm": "cnn_val.ablate",
    "run_sweep": "cnn_val.ablate", "aggregate": "cnn_val.ablate",
}
__all__ = sorted(_PUBLIC) + ["__version__"]


def __getattr__(name):
  if name in _PUBLIC:
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
  else:
    try:
      value = importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as e:
      if e.name != f"{__name__}.{name}":  # a dependency of an existing module is missing: say that
        raise
      raise AttributeError(f"module 'cnn_val' has no attribute {name!r}; the public names are {__all__}") from None
  globals()[name] = value
  return value
