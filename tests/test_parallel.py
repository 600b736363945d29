"""Micro-batched steps (lax.scan with gradient accumulation) equal the unsplit step; bfloat16 compute."""

import functools

import jax
import numpy as np
import pytest

from cnn_val import models, optim, parallel, steps
from cnn_val.configs import default, fashion_mnist_bn


def _step(config, micro_batch_size, batch, num_devices=2, dtype="float32"):
  """One training step as train_and_evaluate builds it (micro_batch_size 0: the whole device batch here)."""
  config.batch_size, config.micro_batch_size, config.dtype = len(batch["label"]), micro_batch_size, dtype
  tx = optim.create_optimizer(config.optim, 10, 1)
  state = steps.create_train_state(models.create_model(config.model, 10), tx, jax.random.key(0), (28, 28, 1))
  step = steps.pmapped_steps(config, 10, tx, jax.local_devices()[:num_devices]).train
  shaped = {k: v.reshape((num_devices, -1) + v.shape[1:]) for k, v in batch.items()}
  return step(state, shaped, jax.random.key(1))


def _batch(n=64):
  rng = np.random.default_rng(0)
  return {"image": rng.integers(0, 255, (n, 28, 28, 1), dtype=np.uint8),
          "label": rng.integers(0, 10, n).astype(np.int32)}


@pytest.mark.parametrize("micro", [8, 16])
def test_micro_batches_equal_the_unsplit_step_without_batchnorm(micro):
  config = default.get_config()  # SeedCNNDropout: per-example dropout, no batch statistics
  whole_state, whole = _step(config, 0, _batch())
  split_state, split = _step(config, micro, _batch())
  for key in ("count", "correct", "steps"):
    assert int(split[key]) == int(whole[key])
  np.testing.assert_allclose(split["loss_sum"], whole["loss_sum"], rtol=1e-5)
  np.testing.assert_allclose(split["grad_norm_sum"], whole["grad_norm_sum"], rtol=1e-4)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
               split_state.params, whole_state.params)


def test_micro_batches_with_batchnorm_run_and_stay_close():
  """BatchNorm normalises each micro-batch by its own statistics: close to, not equal to, the whole batch."""
  config = fashion_mnist_bn.get_config()
  whole_state, whole = _step(config, 0, _batch())
  split_state, split = _step(config, 8, _batch())
  assert np.isfinite(float(split["loss_sum"]))
  np.testing.assert_allclose(split["loss_sum"], whole["loss_sum"], rtol=0.05)
  assert not np.allclose(split_state.batch_stats["BatchNorm_0"]["mean"],
                         whole_state.batch_stats["BatchNorm_0"]["mean"], rtol=1e-6, atol=0)


def test_micro_batch_size_resolution():
  assert parallel.micro_batch_size(0, 128, has_batch_stats=False) == 32  # auto on CPU
  assert parallel.micro_batch_size(0, 128, has_batch_stats=True) == 128  # never split BatchNorm silently
  assert parallel.micro_batch_size(0, 16, has_batch_stats=False) == 16
  assert parallel.micro_batch_size(0, 48, has_batch_stats=False) == 48
  assert parallel.micro_batch_size(256, 128, has_batch_stats=False) == 128
  with pytest.raises(ValueError, match="config.micro_batch_size=24 does not divide the per-device batch of 64"):
    parallel.micro_batch_size(24, 64, has_batch_stats=False)


def test_bfloat16_compute_keeps_float32_parameters_and_tracks_float32():
  config = default.get_config()
  _, f32 = _step(config, 0, _batch())
  state, bf16 = _step(config, 0, _batch(), dtype="bfloat16")
  assert all(p.dtype == np.float32 for p in jax.tree.leaves(state.params))
  assert all(p.dtype == np.float32 for p in jax.tree.leaves(state.opt_state) if hasattr(p, "dtype")
             and np.issubdtype(p.dtype, np.floating))
  np.testing.assert_allclose(bf16["loss_sum"], f32["loss_sum"], rtol=2e-2)


@pytest.mark.parametrize("make_config", [default.get_config, fashion_mnist_bn.get_config])
def test_eval_and_predict_in_micro_batches_equal_the_whole_batch(make_config):
  """Eval mode (BatchNorm on its running statistics): each example alone, so micro-batches give the same sums
  and probabilities; padded examples (mask False) still count nowhere."""
  config = make_config()
  model = models.create_model(config.model, 10)
  state = steps.create_train_state(model, optim.create_optimizer(config.optim, 10, 1), jax.random.key(0), (28, 28, 1))
  batch = _batch(60)
  batch["mask"] = np.arange(60) < 53
  outs = {}
  for micro in (0, 15, 60, 7):  # 7 does not divide 60: the whole batch
    ev = jax.jit(functools.partial(steps.eval_step, model=model, num_classes=10, axis_name=None,
                                   micro_batch_size=micro))
    pr = jax.jit(functools.partial(steps.predict_step, model=model, axis_name=None, micro_batch_size=micro))
    outs[micro] = jax.device_get((ev(state, batch), pr(state, batch)))
  (whole, whole_probs) = outs[0]
  assert int(whole["count"]) == 53 and whole["confusion"].sum() == 53
  for micro in (15, 60, 7):
    sums, probs = outs[micro]
    for key in ("count", "correct", "confusion"):
      np.testing.assert_array_equal(sums[key], whole[key])
    np.testing.assert_allclose(sums["loss_sum"], whole["loss_sum"], rtol=1e-5)
    assert probs["probs"].shape == (60, 10)
    np.testing.assert_allclose(probs["probs"], whole_probs["probs"], rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(probs["mask"], batch["mask"])


def test_eval_micro_batch_size_resolution():
  assert parallel.eval_micro_batch_size(500) == 125  # the largest divisor in [32, 128], on CPU
  assert parallel.eval_micro_batch_size(1000) == 125
  assert parallel.eval_micro_batch_size(256) == 128
  assert parallel.eval_micro_batch_size(100) == 100  # small enough already
  assert parallel.eval_micro_batch_size(997) == 997  # a prime: no divisor in range, not split
  assert parallel.eval_micro_batch_size(130) == 65
