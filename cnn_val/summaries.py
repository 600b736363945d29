"""TensorBoard event files without TensorFlow, for run directories on this machine.

clu's `metric_writers.SummaryWriter` writes through `tf.summary`, and importing it imports TensorFlow: 6-10 s
of every run's start on a 2-core CPU, for a few scalars per logging interval. `EventWriter` writes the same
summaries (TF2's tensor summaries with their plugin's metadata: scalars, texts, PNG images, the HParams
session) with TensorBoard's own building blocks (its protos, plugin metadata, `tensor_util`, the HParams
plugin's `hparams_pb`, and the record framing of `RecordWriter`), and answers clu's `MetricWriter` methods
that cnn_val uses. `rundir.tensorboard_writer` picks it for local folders; a remote folder (gs://...) keeps
clu's writer, whose TensorFlow file system writes object stores.
"""

from __future__ import annotations

import io
import itertools
import os
import socket
import time
from typing import Any, Mapping

import numpy as np
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.plugins.hparams import summary_v2 as hparams_summary
from tensorboard.plugins.image import metadata as image_metadata
from tensorboard.plugins.scalar import summary_v2 as scalar_summary
from tensorboard.plugins.text import summary_v2 as text_summary
from tensorboard.summary.writer import record_writer
from tensorboard.util import tensor_util

_uid = itertools.count()


def png(image: np.ndarray) -> bytes:
  """An [H, W, C] image (C 1, 3 or 4; uint8, or float in [0, 1] as `tf.summary.image` takes it) as PNG bytes."""
  import PIL.Image  # pylint: disable=import-outside-toplevel
  image = np.asarray(image)
  if image.dtype != np.uint8:
    image = np.clip(np.round(image.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
  if image.ndim != 3 or image.shape[-1] not in (1, 3, 4):
    raise ValueError(f"An image summary needs [H, W, C] with C in (1, 3, 4); got shape {image.shape}.")
  buffer = io.BytesIO()
  PIL.Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buffer, format="PNG")
  return buffer.getvalue()


def image_summary(tag: str, images: np.ndarray) -> summary_pb2.Summary:
  """What `tf.summary.image` writes: a string tensor [width, height, png...] under the images plugin."""
  images = np.asarray(images)
  if images.ndim == 3:
    images = images[None]
  tensor = tensor_util.make_tensor_proto(
      [str(images.shape[2]).encode(), str(images.shape[1]).encode()] + [png(i) for i in images], dtype=np.object_)
  summary = summary_pb2.Summary()
  summary.value.add(tag=tag, tensor=tensor,
                    metadata=image_metadata.create_summary_metadata(display_name=None, description=None))
  return summary


class EventWriter:
  """clu's `MetricWriter` methods that cnn_val uses, writing one event file in the local folder `logdir`
  (`events.out.tfevents.<time>.<host>.<pid>.<n>.v2`, as TensorFlow names its own). Each write goes to the
  file at once; `flush` makes it durable."""

  def __init__(self, logdir: str):
    os.makedirs(logdir, exist_ok=True)
    name = f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}.{next(_uid)}.v2"
    self._file = open(os.path.join(logdir, name), "wb")  # pylint: disable=consider-using-with
    self._records = record_writer.RecordWriter(self._file)
    self._described = set()  # a tag's plugin metadata goes with its first value only, as TensorFlow does
    self._write(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))

  def _write(self, event: event_pb2.Event) -> None:
    self._records.write(event.SerializeToString())

  def _summary(self, step: int, *summaries: summary_pb2.Summary) -> None:
    """One event at `step` holding the values of `summaries`."""
    summary = summary_pb2.Summary()
    for part in summaries:
      summary.value.extend(part.value)
    for value in summary.value:
      if value.tag in self._described:
        value.ClearField("metadata")
      self._described.add(value.tag)
    self._write(event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary))

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    self._summary(step, *(scalar_summary.scalar_pb(tag, np.asarray(v)) for tag, v in scalars.items()))

  def write_texts(self, step: int, texts: Mapping[str, str]) -> None:
    self._summary(step, *(text_summary.text_pb(tag, text) for tag, text in texts.items()))

  def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
    self._summary(step, *(image_summary(tag, image) for tag, image in images.items()))

  def write_hparams(self, hparams: Mapping[str, Any]) -> None:
    """The HParams view's session (step 0, as `tensorboard.plugins.hparams.api.hparams` writes it)."""
    self._summary(0, hparams_summary.hparams_pb(dict(hparams)))

  def flush(self) -> None:
    self._file.flush()
    os.fsync(self._file.fileno())

  def close(self) -> None:
    if not self._file.closed:
      self.flush()
      self._file.close()
