"""Orbax checkpoints of the training state: `latest` (to resume a killed run) and `best` (by validation accuracy).

Saves are synchronous: a checkpoint is complete on disk before training continues, so a SIGKILL at any moment
leaves either the previous or the new checkpoint, never a torn one (orbax writes to a temporary folder and
renames it).
"""

from __future__ import annotations

import os

import orbax.checkpoint as ocp


class Checkpoints:
  """The two checkpoint folders of a run directory: `checkpoints/latest` and `checkpoints/best`."""

  def __init__(self, workdir: str):
    root = os.path.abspath(os.path.join(workdir, "checkpoints"))
    self.latest = ocp.CheckpointManager(
        os.path.join(root, "latest"),
        options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True, enable_async_checkpointing=False))
    self.best = ocp.CheckpointManager(
        os.path.join(root, "best"),
        options=ocp.CheckpointManagerOptions(
            max_to_keep=1, create=True, enable_async_checkpointing=False,
            best_fn=lambda metrics: metrics["val_accuracy"], best_mode="max"))

  def latest_step(self) -> int | None:
    return self.latest.latest_step()

  def restore_latest(self, abstract_state):
    """The latest state, shaped like `abstract_state`, or None when there is no checkpoint yet."""
    step = self.latest.latest_step()
    if step is None:
      return None
    return self.latest.restore(step, args=ocp.args.StandardRestore(abstract_state))

  def restore_best(self, abstract_state):
    step = self.best.best_step()
    if step is None:
      return None
    return self.best.restore(step, args=ocp.args.StandardRestore(abstract_state))

  def save(self, step: int, state, *, val_accuracy: float, best_so_far: float | None) -> None:
    """Saves `latest`, and `best` when `val_accuracy` ties or beats `best_so_far` (ties keep the later)."""
    self.latest.save(step, args=ocp.args.StandardSave(state))
    if best_so_far is None or val_accuracy >= best_so_far:
      self.best.save(step, args=ocp.args.StandardSave(state), metrics={"val_accuracy": float(val_accuracy)})

  def close(self) -> None:
    self.latest.close()
    self.best.close()
