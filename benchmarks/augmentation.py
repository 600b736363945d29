"""Augmentation speed, in one run: cnn_val's on-device augmentation against Keras' ImageDataGenerator, and
the train step with augmentation on against off.

    .venv/bin/python -m benchmarks.augmentation [--preset=characters] [--batch_size=256] [--rounds=3]

1. Throughput (images/s) of the same random affine at the same batch size: `augment.augment_batch` jitted
   (what the train step runs) against `ImageDataGenerator(...).flow(x, batch_size)` (numpy + scipy per
   image, the seed's framework), alternately, on real Fashion-MNIST images when Debian's package is there.
2. cnn_val's whole train step (SeedCNNDropout, the default config) with that augmentation against none.
"""


from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import common
from cnn_val import augment
from cnn_val.data import fashion_mnist_offline
from cnn_val.configs import default

flags.DEFINE_string("preset", "characters", "Augmentation preset (cnn_val.augment.PRESETS).")
flags.DEFINE_integer("batch_size", 256, "Batch size for both.")
flags.DEFINE_integer("rounds", 3, "Alternating rounds; the median is reported.")
flags.DEFINE_float("seconds", 2.0, "Approximate time per measurement.")
FLAGS = flags.FLAGS


def _images(n):
  files = fashion_mnist_offline.local_files()
  if files is None:
    return common.synthetic_batches(n, num_batches=1)[0]
  import gzip
  with gzip.open(files["train_data"], "rb") as f:
    f.read(16)
    return np.frombuffer(f.read(n * 784), np.uint8).reshape(n, 28, 28, 1)


def _ours(params, images, batch_size):
  fn = jax.jit(lambda x, ids, key: augment.augment_batch(params, x.astype(jnp.float32) / 255.0, ids, key))
  batches = [jnp.asarray(images[i:i + batch_size]) for i in range(0, len(images), batch_size)]
  ids = jnp.arange(batch_size)

  def run(num_steps):
    for i in range(num_steps):
      out = fn(batches[i % len(batches)], ids, jax.random.key(i))
    out.block_until_ready()
  return run


def _keras(params, images, batch_size):
  from keras.src.legacy.preprocessing.image import ImageDataGenerator
  lo, hi = params.zoom_range
  gen = ImageDataGenerator(
      rotation_range=params.rotation_range, width_shift_range=params.width_shift_range,
      height_shift_range=params.height_shift_range, shear_range=params.shear_range, zoom_range=[lo, hi],
      horizontal_flip=params.horizontal_flip, vertical_flip=params.vertical_flip, fill_mode=params.fill_mode,
      cval=params.cval, rescale=1 / 255.0)
  flow = gen.flow(images.astype(np.float32), batch_size=batch_size, shuffle=False, seed=0)

  def run(num_steps):
    for _ in range(num_steps):
      next(flow)
  return run


def main(argv):
  del argv
  params = augment.from_config(_with_preset(FLAGS.preset).augment)
  bs = FLAGS.batch_size
  images = _images(bs * 8)
  print(f"Augmentation {FLAGS.preset}: {params}")
  print(f"{jax.device_count()} {jax.default_backend()} device(s); batch {bs}; median of {FLAGS.rounds} rounds\n")
  ours, keras = common.measure([(_ours(params, images, bs), bs), (_keras(params, images, bs), bs)],
                               FLAGS.rounds, FLAGS.seconds)
  print(f"{'augmentation':40s} {'img/s':>10s}")
  print(f"{'cnn_val augment_batch (jit, on device)':40s} {ours:10.0f}")
  print(f"{'Keras ImageDataGenerator.flow':40s} {keras:10.0f}")
  print(f"ratio cnn_val / Keras: {ours / keras:.1f}x\n")

  off, on = default.get_config(), _with_preset(FLAGS.preset)
  rates = common.measure([(common.cnn_val_runner(off, bs, 1), bs), (common.cnn_val_runner(on, bs, 1), bs)],
                         FLAGS.rounds, FLAGS.seconds)
  print(f"{'SeedCNNDropout train step':40s} {'img/s':>10s} {'ms/step':>8s}")
  for label, rate in (("augmentation off", rates[0]), (f"augmentation {FLAGS.preset}", rates[1])):
    print(f"{label:40s} {rate:10.0f} {1000 * bs / rate:8.2f}")
  print(f"step time with / without augmentation: {rates[0] / rates[1]:.3f}x")


def _with_preset(preset):
  config = default.get_config()
  config.augment.preset = preset
  return config


if __name__ == "__main__":
  app.run(main)
