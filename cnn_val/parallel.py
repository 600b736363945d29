"""Data parallelism: the one axis name, the one place `jax.pmap` is applied, and device selection.

Step functions are written per device and reduce over `AXIS` with `lax.pmean`/`lax.psum`. The training
state goes in and comes out unreplicated (`in_axes=None`, `out_axes=None`): since JAX 0.8 `pmap` is
`jit(shard_map)`, and a replicated state avoids both `device_put_replicated` (gone in JAX 0.10) and the
global gather that `unreplicate` now costs. Only the batch is split over devices (axis 0).
"""

from __future__ import annotations

import jax

AXIS = "batch"


def select_devices(num_devices: int) -> list:
  """The first `num_devices` local devices (0 = all of them)."""
  local = jax.local_devices()
  if num_devices < 0 or num_devices > len(local):
    raise ValueError(f"config.num_devices={num_devices}, but this host has {len(local)} local "
                     f"{local[0].platform} device(s). Use 0 (all) or a number up to {len(local)}.")
  return local[:num_devices] if num_devices else local


def pmap_step(step_fn, devices, *, batch_argnums: tuple[int, ...], num_args: int):
  """Wraps a per-device step: arguments in `batch_argnums` are split over devices, the rest replicated.

  The step's outputs must be identical on every device (reduced over `AXIS`); they come back unreplicated.
  """
  in_axes = tuple(0 if i in batch_argnums else None for i in range(num_args))
  return jax.pmap(step_fn, axis_name=AXIS, in_axes=in_axes, out_axes=None, devices=devices)


# XLA's CPU kernels run small batches faster per image than large ones (best near 32; benchmarks/).
CPU_MICRO_BATCH = 32


def micro_batch_size(requested: int, per_device_batch: int, *, has_batch_stats: bool) -> int:
  """Examples per micro-batch inside a device's step (`config.micro_batch_size`; 0 = auto).

  Auto splits only on CPU, only models without batch statistics (BatchNorm would then see smaller
  batches, a different model), and only when the device batch is a multiple of CPU_MICRO_BATCH.
  """
  if requested < 0:
    raise ValueError(f"config.micro_batch_size={requested}: expected 0 (auto) or a positive count.")
  if requested == 0:
    split = (jax.default_backend() == "cpu" and not has_batch_stats and per_device_batch > CPU_MICRO_BATCH
             and per_device_batch % CPU_MICRO_BATCH == 0)
    return CPU_MICRO_BATCH if split else per_device_batch
  if requested >= per_device_batch:
    return per_device_batch
  if per_device_batch % requested:
    raise ValueError(f"config.micro_batch_size={requested} does not divide the per-device batch of "
                     f"{per_device_batch}; use a divisor of it, or 0 (auto).")
  return requested
