"""Orbax checkpoints of the training state: `latest` (to resume a killed run) and `best` (by validation accuracy).

Saves are synchronous: a checkpoint is complete on disk before training continues, so a SIGKILL at any moment
leaves either the previous or the new checkpoint, never a torn one (orbax writes to a temporary folder and
renames it).

Each checkpoint carries a SHA-256 of the state it holds (`CHECKSUM_FILE` in its step folder), checked on
restore: a checkpoint whose bytes changed on disk (a flipped bit, a truncated or missing file) is never
restored silently. `latest` keeps the previous checkpoint too, and a corrupt latest one falls back to it with
a message (the run then redoes the epochs in between, with the same result, and rewrites their checkpoints).
`best` is saved before `latest`, so a kill between the two saves is repaired when the epoch is redone.

The run directory may be a URL (gs://bucket/run): orbax writes there through epath and tensorstore's own
drivers, the checksum files go through `rundir.path`, and the free-space check is made on local disks only.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil

from absl import logging
import jax
import numpy as np
import orbax.checkpoint as ocp

from cnn_val import rundir

CHECKSUM_FILE = "cnn_val_checksum.json"
KEEP_LATEST = 2  # the latest checkpoint and the one before it, to fall back to


class CorruptCheckpointError(ValueError):
  """No checkpoint of a run directory could be restored intact."""


def state_checksum(state) -> str:
  """SHA-256 over every leaf of `state` (shape, dtype and bytes, in tree order); PRNG keys by their data."""
  digest = hashlib.sha256()
  for leaf in jax.tree.leaves(state):
    if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
      leaf = jax.random.key_data(leaf)
    array = np.ascontiguousarray(np.asarray(jax.device_get(leaf)))
    digest.update(f"{array.shape}{array.dtype.str}".encode())
    digest.update(array.tobytes())
  return digest.hexdigest()


def _replicated_sharding():
  return jax.sharding.NamedSharding(jax.sharding.Mesh(np.asarray(jax.devices()), ("x",)),
                                    jax.sharding.PartitionSpec())


def _to_global(state):
  """Multi-process: the steps' replicated, process-local state as global arrays, the form orbax saves (every
  process passes its identical copy). One process: unchanged."""
  if jax.process_count() == 1:
    return state
  sharding = _replicated_sharding()
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(jax.device_get(x))),
                      state)


def _abstract(state):
  """The restore target: `state` itself on one process; global replicated shapes on several."""
  if jax.process_count() == 1:
    return state
  sharding = _replicated_sharding()
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=sharding), state)


def _to_local(state):
  """Multi-process: a restored global state back to this process's copy on its first device."""
  if jax.process_count() == 1:
    return state
  device = jax.local_devices()[0]
  return jax.tree.map(lambda x: jax.device_put(np.asarray(x.addressable_data(0)), device), state)


def state_bytes(state) -> int:
  """The bytes of one copy of `state`'s arrays: about what a checkpoint of it takes on disk."""
  total = 0
  for leaf in jax.tree.leaves(state):
    if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
      leaf = jax.random.key_data(leaf)
    total += int(np.prod(np.shape(leaf))) * np.dtype(leaf.dtype).itemsize
  return total


# Room a checkpoint needs besides its arrays: orbax's metadata and the checksum file (45 KB for the seed model).
METADATA_BYTES = 256 << 10


class Checkpoints:
  """The two checkpoint folders of a run directory: `checkpoints/latest` and `checkpoints/best`.

  `cleanup=True` (training, which holds the run's lock) removes the temporary folders of a save that a kill or
  a full disk cut short; readers (evaluation, the doctor) leave them alone: a live run may be writing one."""

  def __init__(self, workdir: str, cleanup: bool = False):
    root = rundir.path(rundir.absolute(workdir)) / "checkpoints"
    self.latest = ocp.CheckpointManager(
        root / "latest",
        options=ocp.CheckpointManagerOptions(max_to_keep=KEEP_LATEST, create=True,
                                             enable_async_checkpointing=False, cleanup_tmp_directories=cleanup))
    self.best = ocp.CheckpointManager(
        root / "best",
        options=ocp.CheckpointManagerOptions(
            max_to_keep=1, create=True, enable_async_checkpointing=False, cleanup_tmp_directories=cleanup,
            best_fn=lambda metrics: metrics["val_accuracy"], best_mode="max"))
    if cleanup:  # orbax removes them in the background until the first save; the space check needs it done
      for manager in (self.latest, self.best):
        getattr(manager, "_maybe_await_cleanup_tmp_directory", lambda: None)()

  def latest_step(self) -> int | None:
    return self.latest.latest_step()

  @staticmethod
  def _checksum_path(manager, step: int):
    return rundir.path(manager.directory) / str(step) / CHECKSUM_FILE

  def _restore(self, manager, step: int, abstract_state):
    """The state at `step`, checked against its checksum; raises CorruptCheckpointError naming the folder."""
    folder = os.path.join(str(manager.directory), str(step))
    try:
      state = _to_local(manager.restore(step, args=ocp.args.StandardRestore(_abstract(abstract_state))))
    except Exception as e:  # pylint: disable=broad-except  (tensorstore/orbax raise many kinds)
      raise CorruptCheckpointError(f"{folder} cannot be read ({type(e).__name__}: "
                                   f"{' '.join(str(e).split())[:300]})") from e
    path = self._checksum_path(manager, step)
    try:
      expected = json.loads(path.read_text())["sha256"]
    except FileNotFoundError:  # written by a version before checksums, or killed just before the checksum
      logging.warning("%s has no %s: restored without a check.", folder, CHECKSUM_FILE)
      return state
    except (ValueError, KeyError) as e:
      raise CorruptCheckpointError(f"{path} is unreadable ({e})") from e
    actual = state_checksum(state)
    if actual != expected:
      raise CorruptCheckpointError(f"{folder} holds different bytes than were saved (SHA-256 {actual[:12]}..., "
                                   f"saved {expected[:12]}...): the files changed on disk")
    return state

  def restore_latest(self, abstract_state, max_step: int | None = None):
    """The newest intact latest state (at step <= `max_step` when given: a checkpoint ahead of metrics.jsonl,
    whose last line was lost, is passed over so that the epoch is redone and its line written again), shaped
    like `abstract_state`, or None when there is none. A corrupt checkpoint is skipped, with a warning, for
    the one before it."""
    problems = []
    steps = sorted(self.latest.all_steps(), reverse=True)
    ahead = [s for s in steps if max_step is not None and s > max_step]
    if ahead:
      logging.warning("Checkpoint(s) at step %s are ahead of metrics.jsonl (last step %s): resuming from an "
                      "earlier one so the missing evaluation is redone.", ahead, max_step)
    for step in (s for s in steps if s not in ahead):
      try:
        state = self._restore(self.latest, step, abstract_state)
      except CorruptCheckpointError as e:
        logging.warning("Checkpoint at step %d is corrupt, trying the one before it: %s", step, e)
        problems.append(str(e))
        continue
      if problems:
        logging.warning("Resuming from the intact checkpoint at step %d; the epochs after it are trained again.",
                        step)
      return state
    if problems:
      raise CorruptCheckpointError(
          "No checkpoint could be restored intact: " + "; ".join(problems) + ". Move the checkpoints folder "
          "aside to train this run from the start in the same workdir (metrics.jsonl is redone), or use a new "
          "--workdir.")
    return None

  def restore_best(self, abstract_state):
    step = self.best.best_step()
    if step is None:
      return None
    return self._restore(self.best, step, abstract_state)

  def _save(self, manager, step: int, state, checksum: str, **kwargs) -> None:
    if step in manager.all_steps():  # an epoch redone (a kill between the two saves, a corrupt checkpoint)
      manager.delete(step)
    # A full disk is caught before orbax starts writing (its writer threads would fail mid-checkpoint, with
    # tracebacks): the run stops with one message and resumes from its last checkpoint once there is room.
    folder = str(manager.directory)
    need = int(state_bytes(state) * 1.05) + METADATA_BYTES
    free = shutil.disk_usage(folder).free if rundir.is_local(folder) else need  # an object store has no "full"
    if free < need:
      raise OSError(errno.ENOSPC, f"No space left on device for the checkpoint of step {step} in {folder}: it "
                    f"needs about {need / 1e6:.1f} MB, {free / 1e6:.1f} MB are free. Free space on that disk (or "
                    f"move the run directory)")
    try:
      manager.save(step, args=ocp.args.StandardSave(_to_global(state)), **kwargs)
      manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except  (tensorstore reports a full disk as a ValueError)
      if "No space left on device" not in str(e):
        raise
      raise OSError(errno.ENOSPC, f"No space left on device while writing the checkpoint of step {step} in "
                    f"{folder}. Free space on that disk (or move the run directory)") from None
    if jax.process_index() != 0:  # every process saves with orbax; the checksum file is process 0's
      return
    rundir.atomic_write(os.fspath(self._checksum_path(manager, step)),
                        json.dumps({"sha256": checksum, "step": int(step)}))

  def save(self, step: int, state, *, val_accuracy: float, best_so_far: float | None) -> None:
    """Saves `best` when `val_accuracy` ties or beats `best_so_far` (ties keep the later), then `latest`."""
    checksum = state_checksum(state)
    if best_so_far is None or val_accuracy >= best_so_far:
      self._save(self.best, step, state, checksum, metrics={"val_accuracy": float(val_accuracy)})
    self._save(self.latest, step, state, checksum)

  def close(self) -> None:
    self.latest.close()
    self.best.close()
