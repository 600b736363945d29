"""cnn_val as a library: the step under plain jax.jit equals the pmapped one, images in either dtype, the
optimizer from keywords; `import cnn_val` is light and its configs cannot clash with a user's own `configs`."""

import functools
import os
import subprocess
import sys
import tomllib

import jax
import numpy as np
import pytest

from cnn_val import models, optim, parallel, steps


def _setup(axis_name):
  model = models.SeedCNNDropout(axis_name=axis_name)
  tx = optim.create_optimizer(learning_rate=1e-3, steps_per_epoch=10, num_epochs=1)
  state = steps.create_train_state(models.SeedCNNDropout(), tx, jax.random.key(0), (28, 28, 1))
  return model, tx, state


def _batch(n=16, dtype=np.uint8):
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (n, 28, 28, 1)).astype(np.uint8)
  return {"image": images if dtype == np.uint8 else (images / 255.0).astype(dtype),
          "label": rng.integers(0, 10, n).astype(np.int32)}


def test_train_step_runs_under_jit_with_the_results_of_a_one_device_pmap():
  model, tx, state = _setup(None)
  jitted = jax.jit(functools.partial(steps.train_step, model=model, tx=tx, axis_name=None))
  new_jit, metrics_jit = jitted(state, _batch(), jax.random.key(1))
  p_model, _, _ = _setup(parallel.AXIS)
  pmapped = parallel.pmap_step(functools.partial(steps.train_step, model=p_model, tx=tx), jax.local_devices()[:1],
                               batch_argnums=(1,), num_args=3)
  batch = {k: v[None] for k, v in _batch().items()}
  new_pmap, metrics_pmap = pmapped(state, batch, jax.random.key(1))
  for a, b in zip(jax.tree.leaves(new_jit.params), jax.tree.leaves(new_pmap.params)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  assert float(metrics_jit["loss_sum"]) == pytest.approx(float(metrics_pmap["loss_sum"]), rel=1e-6)
  evaluated = jax.jit(functools.partial(steps.eval_step, model=model, num_classes=10, axis_name=None))(
      new_jit, _batch())  # no mask: every example counts
  assert int(evaluated["count"]) == 16 and int(np.sum(evaluated["confusion"])) == 16


def test_float_images_on_0_1_equal_uint8_and_other_dtypes_are_refused():
  model, tx, state = _setup(None)
  step = jax.jit(functools.partial(steps.train_step, model=model, tx=tx, axis_name=None))
  from_uint8, _ = step(state, _batch(), jax.random.key(1))
  from_float, _ = step(state, _batch(dtype=np.float32), jax.random.key(1))
  for a, b in zip(jax.tree.leaves(from_uint8.params), jax.tree.leaves(from_float.params)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  wrong = {**_batch(), "image": _batch()["image"].astype(np.int32)}
  with pytest.raises(TypeError, match=r"batch\['image'\] has dtype int32: expected uint8 pixels"):
    step(state, wrong, jax.random.key(1))


def test_import_is_light_and_the_configs_do_not_clash_with_a_users_configs_package(tmp_path):
  """From a project with its own top-level `configs` package: `import cnn_val` loads neither JAX nor
  TensorFlow, the user's `configs` stays theirs, and cnn_val's experiment configs are `cnn_val.configs`."""
  (tmp_path / "configs").mkdir()
  (tmp_path / "configs" / "__init__.py").write_text("MINE = True\n")
  code = ("import sys, cnn_val; heavy = sorted({'jax', 'tensorflow', 'flax'} & set(sys.modules)); "
          "import configs; from cnn_val.configs import default; from cnn_val.configs.faults import healthy; "
          "print(heavy, configs.MINE, default.get_config().num_epochs, healthy.get_config().num_epochs)")
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                       check=True).stdout.split()
  assert out == ["[]", "True", "25", "10"]


def test_every_package_directory_is_installed():
  """pyproject.toml lists the packages (cnn_val.configs maps to the top-level configs/): none may be missing."""
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  with open(os.path.join(root, "pyproject.toml"), "rb") as f:
    listed = set(tomllib.load(f)["tool"]["setuptools"]["packages"])
  found = set()
  for top, name in (("cnn_val", "cnn_val"), ("configs", "cnn_val.configs")):
    for folder, _, files in os.walk(os.path.join(root, top)):
      if "__init__.py" in files:
        rel = os.path.relpath(folder, os.path.join(root, top))
        found.add(name if rel == "." else name + "." + rel.replace(os.sep, "."))
  assert listed == found


def test_the_moving_average_of_the_weights_follows_tensorflows_warm_up():
  """ema_decay keeps avg <- r * avg + (1 - r) * new after each step, r = min(decay, (1 + t) / (10 + t)) at
  step t (TensorFlow's ExponentialMovingAverage with num_updates), recomputed here from the trained weights."""
  model, tx, _ = _setup(None)
  state = steps.create_train_state(models.SeedCNNDropout(), tx, jax.random.key(0), (28, 28, 1), ema=True)
  step = jax.jit(functools.partial(steps.train_step, model=model, tx=tx, axis_name=None, ema_decay=0.5))
  expected = jax.tree.map(np.asarray, state.params)
  for t in range(4):
    state, _ = step(state, _batch(), jax.random.key(1))
    rate = min(0.5, (1 + t) / (10 + t))
    expected = jax.tree.map(lambda avg, new: rate * avg + (1 - rate) * np.asarray(new), expected, state.params)
  for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(state.ema["params"])):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  averaged = steps.ema_weights(state)
  assert averaged.params is state.ema["params"] and averaged.step is state.step
  plain = steps.create_train_state(models.SeedCNNDropout(), tx, jax.random.key(0), (28, 28, 1))
  assert plain.ema is None and len(jax.tree.leaves(plain)) == len(jax.tree.leaves(state)) - len(
      jax.tree.leaves(state.ema))  # without it, the state (and its checkpoints) are what they were
  with pytest.raises(ValueError, match="config.ema_decay > 0"):
    steps.ema_weights(plain)
