"""GPU check for a lent accelerator, in one short call: throughput, precision and pmap on the GPU(s).

    bash benchmarks/gpu_check.sh        (installs carried wheels if any, then runs this)

Prints: the devices; the fast-path equality on this backend (matmul convolution vs XLA's); the train-step
throughput of SeedCNN and SeedCNNDropout at batch 32 and 256 (cnn_val over all GPUs with `jax.pmap`, against
PyTorch eager on the same GPU when torch with CUDA is there); the ResNet-20 step on 32x32x3 in float32 and
bfloat16, each with GFLOP/s (FLOPs per image from XLA's cost analysis of the step compiled for the host CPU:
on a GPU the analysis leaves out cuDNN's convolutions) and its share of the chip's matmul peaks measured in the
same run (float32 at 'highest' precision, float32 at JAX's default, TF32 where the chip has it, and
bfloat16); with --scaling, where several GPUs exist, pmap's scaling from 1 to N devices at a fixed batch per
device (weak scaling: efficiency = images/s on k devices / (k x images/s on 1)). Needs no TensorFlow: it imports
only the model, optimizer and step modules.
"""

from absl import app
from absl import flags
import jax
from jax import lax
import numpy as np

from benchmarks import common
from cnn_val import fast_ops
from cnn_val.configs import cifar10_resnet, default, seed_ex1

flags.DEFINE_integer("rounds", 3, "Alternating measurement rounds; the median is reported.")
flags.DEFINE_float("seconds", 1.0, "Approximate time per measurement.")
flags.DEFINE_bool("scaling", False, "Only pmap's scaling from 1 to N local devices (needs 2 or more).")
flags.DEFINE_integer("per_device_batch", 256, "--scaling: the batch on each device.")
FLAGS = flags.FLAGS


def torch_runner(model_name, batch_size):
  import torch
  from torch import nn
  dev = torch.device("cuda")
  images, labels = common.synthetic_batches(batch_size)
  x = torch.from_numpy(images.astype(np.float32) / 255.0).permute(0, 3, 1, 2).contiguous().to(dev)
  y = torch.from_numpy(labels.astype(np.int64)).to(dev)
  if model_name == "SeedCNNDropout":
    model = nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Flatten(), nn.Dropout(0.5), nn.Linear(1600, 10))
  else:
    model = nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(5408, 10))
  model = model.to(dev)
  opt = torch.optim.Adam(model.parameters(), 1e-3)
  loss_fn = nn.CrossEntropyLoss()

  def run(num_steps):
    for i in range(num_steps):
      j = (i % (len(y) // batch_size)) * batch_size
      opt.zero_grad(set_to_none=True)
      loss_fn(model(x[j:j + batch_size]), y[j:j + batch_size]).backward()
      opt.step()
    torch.cuda.synchronize()

  return run


def _torch_cuda():
  try:
    import torch
    return torch.cuda.is_available()
  except ImportError:
    return False


def device_counts(n: int) -> list[int]:
  """1, 2, 4, ... up to n, and n itself."""
  counts = [1]
  while counts[-1] * 2 <= n:
    counts.append(counts[-1] * 2)
  return counts if counts[-1] == n else counts + [n]


def scaling(n: int) -> None:
  """Weak scaling of the pmapped train step over 1..n local devices, each with --per_device_batch examples."""
  per_device = FLAGS.per_device_batch
  cases = []
  for name, make, shape in (("SeedCNNDropout", default.get_config, (28, 28, 1)),
                            ("ResNet-20", cifar10_resnet.get_config, (32, 32, 3))):
    for k in device_counts(n):
      cases.append((name, k, common.cnn_val_runner(make(), per_device * k, k, image_shape=shape)))
  rates = common.measure([(run, per_device * k) for _, k, run in cases], FLAGS.rounds, FLAGS.seconds)
  one = {name: rate for (name, k, _), rate in zip(cases, rates) if k == 1}
  print(f"pmap weak scaling, {per_device} images per device, float32")
  print(f"{'model':16s} {'devices':>7s} {'img/s':>10s} {'speed-up':>8s} {'efficiency':>10s}")
  for (name, k, _), rate in zip(cases, rates):
    print(f"{name:16s} {k:7d} {rate:10.0f} {rate / one[name]:7.2f}x {rate / (k * one[name]):9.0%}")


def main(argv):
  del argv
  devices = jax.local_devices()
  print(f"JAX {jax.__version__}, backend {jax.default_backend()}, {len(devices)} device(s): "
        f"{[d.device_kind for d in devices]}")
  if FLAGS.scaling:
    if len(devices) < 2:
      print(f"--scaling: {len(devices)} device here; the scaling from 1 to N needs 2 or more.")
      return
    scaling(len(devices))
    return

  x = jax.random.normal(jax.random.key(0), (8, 28, 28, 32))
  w = jax.random.normal(jax.random.key(1), (3, 3, 32, 64)) * 0.1
  dn = ("NHWC", "HWIO", "NHWC")
  ref = lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=dn, precision="highest")
  ours = fast_ops.conv_matmul(x, w, (1, 1), "SAME", dimension_numbers=dn, precision="highest")
  print(f"conv_impl auto -> {fast_ops.resolve_impl('auto')}; matmul vs XLA conv max abs diff "
        f"{float(np.max(np.abs(np.asarray(ours - ref)))):.2e}")

  n = len(devices)
  cases, flops = [], {}  # flops: per image of each (model, batch), the float32 step's (the same arithmetic)
  for batch_size in (32, 256):
    for name, make in (("SeedCNN", seed_ex1.get_config), ("SeedCNNDropout", default.get_config)):
      flops[name, batch_size] = common.flops_per_image(make(), batch_size)
      for dtype in ("float32", "bfloat16"):
        config = make()
        config.dtype = dtype
        cases.append((name, batch_size, f"cnn_val pmap x{n}, {dtype}", common.cnn_val_runner(config, batch_size, n)))
      if _torch_cuda():
        cases.append((name, batch_size, "pytorch eager, float32", torch_runner(name, batch_size)))
  for batch_size in (128, 512):
    flops["ResNet-20", batch_size] = common.flops_per_image(cifar10_resnet.get_config(), batch_size,
                                                            image_shape=(32, 32, 3))
    for dtype in ("float32", "bfloat16"):
      config = cifar10_resnet.get_config()
      config.dtype = dtype
      cases.append(("ResNet-20", batch_size, f"cnn_val pmap x{n}, {dtype}",
                    common.cnn_val_runner(config, batch_size, n, image_shape=(32, 32, 3))))
  rates = common.measure([(run, b) for _, b, _, run in cases], FLAGS.rounds, FLAGS.seconds)
  peaks = {"f32": common.matmul_peak_flops(precision="highest"), "tf32": common.matmul_peak_flops(),
           "bf16": common.matmul_peak_flops(dtype="bfloat16")}
  print("matmul peaks (one device): " + ", ".join(f"{k} {v / 1e12:,.1f} TFLOP/s" for k, v in peaks.items())
        + " (f32: precision 'highest'; tf32: JAX's default precision for float32)")
  print("| model | batch | what | images/s | MFLOP/image | GFLOP/s | of f32 peak | of tf32 peak | of bf16 peak |")
  print("| --- " * 9 + "|")
  for (name, batch_size, label, _), rate in zip(cases, rates):
    used = n if label.startswith("cnn_val") else 1  # PyTorch eager runs on one GPU
    per_device = rate * flops[name, batch_size] / used  # the peaks are one device's
    print(f"| {name} | {batch_size} | {label} | {rate:,.0f} | {flops[name, batch_size] / 1e6:.2f} | "
          f"{rate * flops[name, batch_size] / 1e9:,.0f} | "
          + " | ".join(f"{per_device / peaks[k]:.1%}" for k in ("f32", "tf32", "bf16")) + " |")


if __name__ == "__main__":
  app.run(main)
