"""Data parallelism: the one axis name, the one place `jax.pmap` is applied, and device selection.

Step functions are written per device and reduce over `AXIS` with `lax.pmean`/`lax.psum`. The training
state goes in and comes out unreplicated (`in_axes=None`, `out_axes=None`): since JAX 0.8 `pmap` is
`jit(shard_map)`, and a replicated state avoids both `device_put_replicated` (gone in JAX 0.10) and the
global gather that `unreplicate` now costs. Only the batch is split over devices (axis 0).
"""

from __future__ import annotations

import functools
import os

import jax
import numpy as np

from cnn_val import models

AXIS = "batch"


def initialize_distributed(coordinator_address: str = "", num_processes: int = 0, process_id: int = -1) -> None:
  """Joins a multi-process JAX run (`jax.distributed.initialize`), before JAX's first operation.

  With a coordinator address, the number of processes and this process's id are required (a local
  multi-process run: launch/multiprocess.sh); with none, JAX detects them itself under SLURM, Open MPI and on
  Cloud TPU. Host CPU devices talk to other processes through gloo."""
  if coordinator_address and (num_processes < 1 or process_id < 0 or process_id >= num_processes):
    raise ValueError(f"--coordinator_address={coordinator_address} needs --num_processes >= 1 and --process_id "
                     f"in [0, num_processes); got {num_processes} and {process_id}.")
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if coordinator_address:
    jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                               process_id=process_id)
  else:
    try:
      jax.distributed.initialize()
    except (ValueError, RuntimeError) as e:
      raise ValueError(f"--distributed: JAX found no multi-process environment to join (SLURM, Open MPI or Cloud "
                       f"TPU; {' '.join(str(e).split())[:200]}). Start the processes with launch/multiprocess.sh, "
                       f"launch/slurm_train.sh or launch/tpu_pod.sh, or pass --coordinator_address, "
                       f"--num_processes and --process_id.") from None


def pmap_devices(devices, across_processes: bool = True) -> list:
  """The devices a step is pmapped over: in a multi-process run, every process's devices (the training and
  evaluation steps: collectives span processes; `devices` must then be all of this process's), unless
  `across_processes` is False (a check that one process runs alone, on its own devices)."""
  if jax.process_count() > 1 and across_processes:
    if set(devices) != set(jax.local_devices()):
      raise ValueError(f"A step across {jax.process_count()} processes runs on all of each process's devices, "
                       f"not {len(devices)} of its {jax.local_device_count()}.")
    return jax.devices()
  return list(devices)


def select_devices(num_devices: int) -> list:
  """The first `num_devices` local devices (0 = all of them)."""
  local = jax.local_devices()
  if num_devices < 0 or num_devices > len(local):
    raise ValueError(f"config.num_devices={num_devices}, but this host has {len(local)} local "
                     f"{local[0].platform} device(s). Use 0 (all) or a number up to {len(local)}.")
  if jax.process_count() > 1 and num_devices not in (0, len(local)):
    raise ValueError(f"config.num_devices={num_devices} in a run of {jax.process_count()} processes: every "
                     f"process trains on all of its devices; use 0 (all), or CUDA_VISIBLE_DEVICES to choose them.")
  return local[:num_devices] if num_devices else local


def pmap_step(step_fn, devices, *, batch_argnums: tuple[int, ...], num_args: int, across_processes: bool = True):
  """Wraps a per-device step: arguments in `batch_argnums` are split over devices, the rest replicated.

  The step's outputs must be identical on every device (reduced over `AXIS`); they come back unreplicated. In a
  multi-process run the step spans every process's devices unless `across_processes` is False.
  """
  in_axes = tuple(0 if i in batch_argnums else None for i in range(num_args))
  step = jax.pmap(step_fn, axis_name=AXIS, in_axes=in_axes, out_axes=None,
                  devices=pmap_devices(devices, across_processes))
  if not one_step_in_flight(devices):
    return step

  @functools.wraps(step_fn)
  def step_and_wait(*args):
    outputs = step(*args)
    jax.block_until_ready(outputs)
    return outputs

  return step_and_wait


def replicate(x, devices):
  """`x` (an array or a pytree of them) placed once on every device of `devices`, as the steps' replicated
  arguments (`in_axes=None`) expect it: a call then copies nothing (a host array would be copied every call)."""
  mesh = jax.sharding.Mesh(np.asarray(devices), (AXIS,))
  return jax.device_put(x, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))


def one_step_in_flight(devices) -> bool:
  """Whether a step must finish before the next is dispatched: with several host CPU devices.

  With steps queued, XLA's CPU runtime (JAX 0.10.2) aborted within 3,000 steps on 2 devices of 2 cores:
  one device's all-reduce waited 40 s for the other ("Expected 2 threads to join the rendezvous") while,
  in gdb, the launch threads sat blocked in `CpuPjRtRawLoadedExecutable::Execute` on later steps (a
  semaphore, a buffer wait), so the missing device's part never ran (processes of a multi-process run wait
  too: their CPU collectives have the same rendezvous). With one step in flight, 3,000 steps
  ran clean (tests/test_host_devices.py), and the wait costs at most 7% (benchmarks/host_devices.py, its
  "wait each step" column). One device and accelerators queue steps as usual (on 1 CPU device the wait
  made real training slower in 5 of 6 paired runs; README, Performance).
  """
  return (len(devices) > 1 or jax.process_count() > 1) and devices[0].platform == "cpu"


def auto_cpu_devices(cpu_count: int, global_batch: int, *, has_batch_stats: bool, micro_batch_size: int) -> int:
  """How many host CPU devices `config.cpu_devices=0` creates (benchmarks/host_devices.py, 2 cores).

  Measured: a step that micro-batches (models without batch statistics) runs 0.71-0.90x on 2 devices,
  since its micro-batches already run at the small-batch speed; a BatchNorm model, whose batch cannot be
  split without changing its statistics, runs 1.18x at 64 examples per device and 1.31x at 128 (1.00x at
  32, 0.72x at 16). So: the most devices, up to one per core, that divide the batch into >= 2 x
  CPU_MICRO_BATCH examples each, only for such models; else one device.
  """
  if not has_batch_stats or micro_batch_size:
    return 1
  return max((k for k in range(2, cpu_count + 1)
              if global_batch % k == 0 and global_batch // k >= 2 * CPU_MICRO_BATCH), default=1)


def use_cpu_devices(config) -> int | None:
  """Sets the number of host CPU devices from `config.cpu_devices` (0 = auto) before JAX starts.

  Returns the count set, or None where the environment's choice stands: auto with XLA_FLAGS'
  `--xla_force_host_platform_device_count` given, or JAX already started (then an explicit count must
  match the devices it has). Only the CPU backend is affected; accelerators keep their devices.
  """
  requested = config.get("cpu_devices", 0)
  if not isinstance(requested, int) or isinstance(requested, bool) or requested < 0:
    raise ValueError(f"config.cpu_devices={requested!r}: expected 0 (auto) or a positive number of host "
                     f"CPU devices.")
  auto = requested == 0
  if auto:
    if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
      return None
    requested = auto_cpu_devices(
        len(os.sched_getaffinity(0)), config.batch_size,
        has_batch_stats=models.has_batch_statistics(config.model), micro_batch_size=config.micro_batch_size)
  try:
    jax.config.update("jax_num_cpu_devices", requested)
  except RuntimeError:  # JAX already ran an operation in this process: its devices are fixed
    have = len(jax.devices("cpu"))
    if not auto and have != requested:
      raise ValueError(
          f"config.cpu_devices={requested}, but JAX already started in this process with {have} CPU "
          f"device(s). Set it before any JAX operation (python -m cnn_val.main does), or use 0 (auto) "
          f"and XLA_FLAGS=--xla_force_host_platform_device_count=N.") from None
    return None
  return requested


# XLA's CPU kernels run small batches faster per image than large ones (best near 32; benchmarks/).
CPU_MICRO_BATCH = 32


# Evaluation (a forward pass in eval mode) is fastest per image on XLA's CPU backend in micro-batches of
# about 128 (benchmarks/fast_paths.py, eval table: 1.2-3x over batches of 500, by model).
CPU_EVAL_MICRO_BATCH = (32, 128)  # the range a micro-batch's size is chosen in: the largest divisor in it


def eval_micro_batch_size(per_device_batch: int) -> int:
  """Examples per micro-batch of an eval-mode step (`steps.eval_step`, `steps.predict_step`): on CPU the largest
  divisor of the device batch in CPU_EVAL_MICRO_BATCH (500 -> 125), else (no such divisor, or another backend)
  the whole batch. Exact for every model: in eval mode no example sees another, BatchNorm included."""
  low, high = CPU_EVAL_MICRO_BATCH
  if jax.default_backend() != "cpu" or per_device_batch <= high:
    return per_device_batch
  return max((d for d in range(low, high + 1) if per_device_batch % d == 0), default=per_device_batch)


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
