"""Flax linen CNN classifiers: the seed's Keras examples, a configurable ConvNet and a CIFAR ResNet.

Every model maps images `[N, H, W, C]` (float, roughly in [0, 1]) to logits `[N, num_classes]` and is called as
`model.apply(variables, images, train=..., example_ids=..., rngs={'dropout': key})`.

Dropout draws its mask per example from the `dropout` RNG folded with the example's *global* index in the
batch (`example_ids`), so a training step gives the same result whether the batch is processed on one device
or split across several. BatchNorm statistics are synchronised across devices when the model is built with
`axis_name` (inside `jax.pmap`); leave it `None` everywhere else (init, notebooks).
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from cnn_val import fast_ops


class Dropout(nn.Module):
  """Inverted dropout whose mask for example `i` depends only on the RNG and `example_ids[i]`. The rate may be
a traced number (a population's member, steps.population_train_chunk): the layer then always draws its mask."""

  rate: float

  @nn.compact
  def __call__(self, x, *, train: bool, example_ids=None):
    if not train or (isinstance(self.rate, (int, float)) and self.rate == 0.0):
      return x
    if example_ids is None:
      example_ids = jnp.arange(x.shape[0])
    key = self.make_rng("dropout")
    keep = 1.0 - self.rate

    def one_mask(example_id):
      return jax.random.bernoulli(jax.random.fold_in(key, example_id), keep, x.shape[1:])

    mask = jax.vmap(one_mask)(example_ids)
    return jnp.where(mask, x / keep, jnp.zeros_like(x))


# Kernel initialisers of the seed models (`config.model.kernel_init`); biases start at zero either way.
KERNEL_INITS = {"lecun_normal": nn.initializers.lecun_normal(),  # Flax's default
                "glorot_uniform": nn.initializers.glorot_uniform()}  # Keras' default (the seed's examples)


def _kernel_init(module):
  return KERNEL_INITS[getattr(module, "kernel_init", "lecun_normal")]


def _head(module, x):
  """The output layer: logits, with its bias initialised to `module.head_bias` when given."""
  bias_init = nn.initializers.zeros_init()
  if module.head_bias is not None:
    bias_init = lambda key, shape, dtype=jnp.float32: jnp.asarray(module.head_bias, dtype).reshape(shape)
  return nn.Dense(module.num_classes, dtype=module.dtype, bias_init=bias_init, kernel_init=_kernel_init(module))(x)


_CONV_FNS = {"matmul": fast_ops.conv_matmul, "cpu_auto": fast_ops.conv_cpu_auto}


def _conv(features, kernel_size, impl, **kwargs):
  """`nn.Conv` (same parameters either way), computed by XLA's convolution or a `fast_ops` rewrite."""
  if impl in _CONV_FNS:
    kwargs["conv_general_dilated"] = _CONV_FNS[impl]
  return nn.Conv(features, kernel_size, **kwargs)


def seed_block_widths(seed_widths: Sequence[int], width_multiplier: float, extra_blocks: int) -> tuple[int, ...]:
  """Channels of each conv block of a seed model: the seed's widened by `width_multiplier`, then `extra_blocks`
  more, each twice as wide as the one before (pooling halves the map, so doubling keeps the work per block)."""
  widths = [max(1, round(c * width_multiplier)) for c in seed_widths]
  for _ in range(extra_blocks):
    widths.append(2 * widths[-1])
  return tuple(widths)


SEED_WIDTHS = {"SeedCNN": (32,), "SeedCNNDropout": (32, 64)}  # each seed model's conv blocks, before its levers
SEED_BLOCKS = {name: len(widths) for name, widths in SEED_WIDTHS.items()}


def seed_extra_blocks_allowed(height: int, width: int, num_seed_blocks: int, convs_per_block: int = 1) -> int:
  """How many blocks may follow a seed model's `num_seed_blocks` on a `height` x `width` input before the map
  would shrink below 1x1 (each block: `convs_per_block` 3x3 VALID convs, then a 2x2 max-pool); negative when the
  seed's own blocks do not fit."""
  shrink = 2 * convs_per_block
  size, fitting = min(height, width), 0
  while size >= shrink + 2:
    size, fitting = (size - shrink) // 2, fitting + 1
  return fitting - num_seed_blocks


def _seed_blocks_fit(module, x, num_seed_blocks: int) -> None:
  """Raises if the seed's blocks plus `module.extra_blocks` would shrink the map of input `x` below 1x1.

  Each block is `convs_per_block` 3x3 VALID convs (size - 2 each) and a 2x2 max-pool (floor of half), so it
  needs a map of at least (2 convs_per_block + 2) square. Checked before any layer is built: past that point the
  head would get an empty map and fail at init with a bare ZeroDivisionError from its initializer.
  """
  height, width = x.shape[1:3]
  max_extra = seed_extra_blocks_allowed(height, width, num_seed_blocks, module.convs_per_block)
  name = type(module).__name__
  several = module.convs_per_block > 1
  convs = (f"{module.convs_per_block} 3x3 VALID convs (config.model.convs_per_block)" if several else
           "a 3x3 VALID conv")
  if max_extra < 0:
    min_size = 1
    for _ in range(num_seed_blocks):
      min_size = 2 * min_size + 2 * module.convs_per_block
    raise ValueError(
        f"{name} needs an input of at least {min_size}x{min_size} for its {num_seed_blocks} conv block(s) of "
        f"{convs}; got {height}x{width}. Use larger images (config.data.image_size)"
        f"{', fewer config.model.convs_per_block' if several else ''} or another config.model.name.")
  if module.extra_blocks > max_extra:
    raise ValueError(
        f"config.model.extra_blocks={module.extra_blocks}: a {height}x{width} input allows at most {max_extra} "
        f"extra block(s) after {name}'s {num_seed_blocks} (each {convs} + 2x2 max-pool shrinks the map; "
        f"more would leave it smaller than 1x1). Set config.model.extra_blocks <= {max_extra}"
        f"{' or fewer config.model.convs_per_block' if several else ''}.")


def _seed_blocks(module, x, seed_widths, *, train, example_ids):
  """The seed's conv-relu-maxpool blocks, widened and deepened by the module's fields (`convs_per_block` conv-relu
  pairs before each pool, the seed's one by default), each followed by dropout.

  The block dropouts are named apart from the head's, so the head's dropout keeps its name (`Dropout_0`) and,
  with it, its RNG stream: at the defaults the masks, and so the training run, are those of the seed model.
  """
  _seed_blocks_fit(module, x, len(seed_widths))
  widths = seed_block_widths(seed_widths, module.width_multiplier, module.extra_blocks)
  for i, features in enumerate(widths):
    for j in range(module.convs_per_block):
      x = _conv(features, (3, 3), module.conv_impl, padding="VALID", dtype=module.dtype,
                use_bias=not module.batchnorm,  # a bias before batchnorm is cancelled by its mean subtraction
                kernel_init=_kernel_init(module))(x)
      if module.batchnorm:
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, axis_name=module.axis_name,
                         dtype=module.dtype, name=f"BlockNorm_{i}" if j == 0 else f"BlockNorm_{i}_{j}")(x)
      x = nn.relu(x)
    x = fast_ops.max_pool(x, 2, module.pool_impl)
    x = Dropout(module.block_dropout_rate, name=f"BlockDropout_{i}")(x, train=train, example_ids=example_ids)
  return x


class SeedCNN(nn.Module):
  """The seed's example 1: Conv32 3x3 relu - maxpool 2 - flatten - dense.

  The article's levers, off by default: `width_multiplier` (wider convs), `extra_blocks` (deeper: more blocks),
  `convs_per_block` (deeper: more convs in each block), `block_dropout_rate` (dropout after each conv block) and
  `batchnorm` (after each conv).
  """

  num_classes: int = 10
  head_bias: tuple | None = None  # initial bias of the output layer (e.g. log class prior)
  width_multiplier: float = 1.0  # channels of every conv layer times this (rounded, >= 1)
  extra_blocks: int = 0  # conv blocks after the seed's, each twice as wide as the previous one
  convs_per_block: int = 1  # conv-relu layers before each max-pool (VGG's deeper blocks); 1 is the seed's
  block_dropout_rate: float = 0.0  # dropout after each conv block's max-pool
  batchnorm: bool = False  # BatchNorm between each conv and its relu
  kernel_init: str = "lecun_normal"  # or "glorot_uniform", Keras' (KERNEL_INITS)
  axis_name: str | None = None  # unused; accepted so every model is built the same way
  conv_impl: str = "xla"
  pool_impl: str = "xla"
  dtype: Any = jnp.float32  # computation dtype; parameters stay float32

  @nn.compact
  def __call__(self, x, *, train: bool, example_ids=None):
    x = _seed_blocks(self, x, SEED_WIDTHS["SeedCNN"], train=train, example_ids=example_ids)
    x = x.reshape((x.shape[0], -1))
    return _head(self, x)


class SeedCNNDropout(nn.Module):
  """The seed's example 3: Conv32 - pool - Conv64 - pool - flatten - dropout - dense.

  The article's levers, off by default: `width_multiplier` (wider convs), `extra_blocks` (deeper: more blocks),
  `convs_per_block` (deeper: more convs in each block), `block_dropout_rate` (dropout after each conv block,
  besides `dropout_rate` before the dense layer) and `batchnorm` (after each conv).
  """

  num_classes: int = 10
  head_bias: tuple | None = None  # initial bias of the output layer (e.g. log class prior)
  dropout_rate: float = 0.5
  width_multiplier: float = 1.0  # channels of every conv layer times this (rounded, >= 1)
  extra_blocks: int = 0  # conv blocks after the seed's, each twice as wide as the previous one
  convs_per_block: int = 1  # conv-relu layers before each max-pool (VGG's deeper blocks); 1 is the seed's
  block_dropout_rate: float = 0.0  # dropout after each conv block's max-pool
  batchnorm: bool = False  # BatchNorm between each conv and its relu
  kernel_init: str = "lecun_normal"  # or "glorot_uniform", Keras' (KERNEL_INITS)
  axis_name: str | None = None
  conv_impl: str = "xla"
  pool_impl: str = "xla"
  dtype: Any = jnp.float32  # computation dtype; parameters stay float32

  @nn.compact
  def __call__(self, x, *, train: bool, example_ids=None):
    x = _seed_blocks(self, x, SEED_WIDTHS["SeedCNNDropout"], train=train, example_ids=example_ids)
    x = x.reshape((x.shape[0], -1))
    x = Dropout(self.dropout_rate)(x, train=train, example_ids=example_ids)
    return _head(self, x)


class ConvNet(nn.Module):
  """Blocks of (conv 3x3 - [batchnorm] - relu) x convs_per_block - maxpool 2 - dropout, then the head.

  The head is flatten - [dense(hidden_units) - [batchnorm] - relu] - dropout - dense(num_classes).
  """

  num_classes: int = 10
  head_bias: tuple | None = None  # initial bias of the output layer (e.g. log class prior)
  widths: Sequence[int] = (32, 64)
  convs_per_block: int = 1
  batchnorm: bool = False
  block_dropout_rate: float = 0.0
  hidden_units: int = 0
  dropout_rate: float = 0.5
  axis_name: str | None = None
  conv_impl: str = "xla"
  pool_impl: str = "xla"
  dtype: Any = jnp.float32  # computation dtype; parameters stay float32

  def _norm(self, x, train):
    if not self.batchnorm:
      return x
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, axis_name=self.axis_name,
                        dtype=self.dtype)(x)

  @nn.compact
  def __call__(self, x, *, train: bool, example_ids=None):
    for features in self.widths:
      for _ in range(self.convs_per_block):
        # A bias before batchnorm is cancelled by its mean subtraction.
        x = _conv(features, (3, 3), self.conv_impl, padding="SAME", use_bias=not self.batchnorm,
                  dtype=self.dtype)(x)
        x = nn.relu(self._norm(x, train))
      x = fast_ops.max_pool(x, 2, self.pool_impl)
      x = Dropout(self.block_dropout_rate)(x, train=train, example_ids=example_ids)
    x = x.reshape((x.shape[0], -1))
    if self.hidden_units:
      x = nn.Dense(self.hidden_units, use_bias=not self.batchnorm, dtype=self.dtype)(x)
      x = nn.relu(self._norm(x, train))
    x = Dropout(self.dropout_rate)(x, train=train, example_ids=example_ids)
    return _head(self, x)


class _BasicBlock(nn.Module):
  features: int
  strides: int
  axis_name: str | None
  conv_impl: str
  dtype: Any

  @nn.compact
  def __call__(self, x, *, train: bool):
    norm = lambda **kw: nn.BatchNorm(
        use_running_average=not train, momentum=0.9, axis_name=self.axis_name, dtype=self.dtype, **kw)
    conv = functools.partial(_conv, impl=self.conv_impl, use_bias=False, dtype=self.dtype)
    y = conv(self.features, (3, 3), strides=self.strides, padding="SAME")(x)
    y = nn.relu(norm()(y))
    y = conv(self.features, (3, 3), padding="SAME")(y)
    # Zero-initialised last scale: each block starts as the identity (Goyal et al. 2017).
    y = norm(scale_init=nn.initializers.zeros)(y)
    if x.shape != y.shape:
      x = conv(self.features, (1, 1), strides=self.strides)(x)
      x = norm()(x)
    return nn.relu(x + y)


class ResNet(nn.Module):
  """CIFAR ResNet (He et al. 2016, section 4.2): depth = 6n + 2, three stages of n basic blocks."""

  num_classes: int = 10
  head_bias: tuple | None = None  # initial bias of the output layer (e.g. log class prior)
  depth: int = 20
  widths: Sequence[int] = (16, 32, 64)
  axis_name: str | None = None
  conv_impl: str = "xla"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool, example_ids=None):
    del example_ids
    if (self.depth - 2) % 6:
      raise ValueError(f"config.model.depth={self.depth}: a CIFAR ResNet needs depth = 6n + 2 (20, 32, 44, 56).")
    blocks_per_stage = (self.depth - 2) // 6
    x = _conv(self.widths[0], (3, 3), self.conv_impl, padding="SAME", use_bias=False, dtype=self.dtype)(x)
    x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9, axis_name=self.axis_name,
                             dtype=self.dtype)(x))
    for stage, features in enumerate(self.widths):
      for block in range(blocks_per_stage):
        strides = 2 if stage > 0 and block == 0 else 1
        x = _BasicBlock(features, strides, self.axis_name, self.conv_impl, self.dtype)(x, train=train)
    x = jnp.mean(x, axis=(1, 2))
    return _head(self, x)


MODELS = {"SeedCNN": SeedCNN, "SeedCNNDropout": SeedCNNDropout, "ConvNet": ConvNet, "ResNet": ResNet}


DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def resolve_dtype(dtype: str):
  """config.dtype as a JAX dtype, or a clear error."""
  if dtype not in DTYPES:
    raise ValueError(f"config.dtype={dtype!r}: expected one of {sorted(DTYPES)}.")
  return DTYPES[dtype]


def has_batch_statistics(model_config) -> bool:
  """Whether the model named by `config.model` keeps BatchNorm statistics, from the config alone (no JAX
  operation runs, so this can be asked before JAX starts)."""
  return model_config.name == "ResNet" or (model_config.name in ("ConvNet", "SeedCNN", "SeedCNNDropout") and
                                           bool(model_config.get("batchnorm", False)))


def create_model(model_config, num_classes: int, axis_name: str | None = None,
                 dtype: str = "float32", class_prior=None) -> nn.Module:
  """Builds the model named by `config.model.name` with the fields that model uses.

  `dtype` ('float32' or 'bfloat16', from `config.dtype`) is the computation dtype; parameters, optimizer
  state and BatchNorm statistics stay float32. With `config.model.prior_bias_init` and a `class_prior`
  (training class frequencies), the output bias starts at log(prior): the initial prediction is the prior,
  not uniform (Karpathy's "init well" for imbalanced data).
  """
  name = model_config.name
  if name not in MODELS:
    raise ValueError(f"config.model.name={name!r} is not a known model; expected one of {sorted(MODELS)}.")
  kwargs: dict[str, Any] = {"num_classes": num_classes, "axis_name": axis_name,
                            "conv_impl": fast_ops.resolve_impl(model_config.conv_impl),
                            "dtype": resolve_dtype(dtype)}
  if model_config.get("prior_bias_init") and class_prior is not None:
    prior = np.maximum(np.asarray(class_prior, np.float64), 1e-12)
    kwargs["head_bias"] = tuple(float(b) for b in np.log(prior / prior.sum()))
  if name != "ResNet":  # ResNet downsamples with strided convolutions, not pooling
    kwargs["pool_impl"] = fast_ops.resolve_pool_impl(model_config.pool_impl)
  if name in ("SeedCNN", "SeedCNNDropout"):
    # .get: configs written before these levers existed (e.g. an old run's config.json) build the seed model.
    kwargs.update(
        width_multiplier=model_config.get("width_multiplier", 1.0),
        extra_blocks=model_config.get("extra_blocks", 0),
        convs_per_block=model_config.get("convs_per_block", 1),
        block_dropout_rate=model_config.get("block_dropout_rate", 0.0),
        batchnorm=bool(model_config.get("batchnorm", False)),
        kernel_init=model_config.get("kernel_init", "lecun_normal"),
    )
  if name == "SeedCNNDropout":
    kwargs["dropout_rate"] = model_config.dropout_rate
  elif name == "ConvNet":
    kwargs.update(
        widths=tuple(model_config.widths),
        convs_per_block=model_config.convs_per_block,
        batchnorm=model_config.batchnorm,
        block_dropout_rate=model_config.block_dropout_rate,
        hidden_units=model_config.hidden_units,
        dropout_rate=model_config.dropout_rate,
    )
  elif name == "ResNet":
    kwargs.update(depth=model_config.depth, widths=tuple(model_config.widths))
  return MODELS[name](**kwargs)
