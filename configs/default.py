"""Default: our recipe on the seed's example-3 model (SeedCNNDropout, Adam + exponential decay), offline
Fashion-MNIST. It differs from the seed's example 3 (configs/seed_ex3.py, the article as written) in three
fields: 25 epochs instead of 10, an exponential decay (to ~0.3x over the run) instead of a constant rate, and
Flax's LeCun-normal kernels instead of Keras' Glorot-uniform.

    python -m cnn_val.main --config=configs/default.py --workdir=runs/default

Fashion-MNIST comes from Debian's `dataset-fashion-mnist` package and is prepared into TFDS's
`fashion_mnist` layout on first use. Measured (seed 0, 2-core CPU): 91.36% test accuracy in 171 s with the
fast CPU path (benchmarks/time_to_accuracy.py; 91.04% with XLA's own ops); validation flat near 92.3% from
epoch 14 on (README). Every other config starts from this one and overrides a few fields.
"""

import ml_collections
from ml_collections.config_dict import placeholder


def get_config():
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.num_epochs = 25
  config.batch_size = 32  # global, over all devices (Keras' default batch size, as in the seed)
  config.eval_batch_size = 500  # global; the last batch is padded and masked, never dropped
  config.num_devices = 0  # local devices to pmap over; 0 = all
  # Host CPU devices to create when JAX starts (CPU backend only); 0 = auto: several only where measured
  # faster (BatchNorm models at >= 64 examples per device), unless XLA_FLAGS already forces a count.
  config.cpu_devices = 0
  # Examples per micro-batch inside each device's step (gradients accumulated with lax.scan); 0 = auto:
  # 32 on CPU for models without BatchNorm, else the whole device batch. Results equal the unsplit step.
  config.micro_batch_size = 0
  # Train steps per host call: K > 1 holds the training split on the device and runs K steps per call
  # (lax.scan; the same results as 1, the per-step loop over host batches); 0 = auto: fused where the split
  # fits in a quarter of the device's memory (cnn_val/train.py, steps_per_call).
  config.steps_per_call = 0
  config.dtype = "float32"  # computation dtype: float32 or bfloat16 (parameters stay float32)
  config.log_every_steps = 200
  config.signals = True  # the doctor's training signals: update/parameter ratio per step
  # At each evaluation, also evaluate this many training examples (a fixed, seeded subset) like validation:
  # eval mode, no augmentation, the epoch's final weights (metrics.jsonl: train_eval_*); 0 = off.
  config.train_eval_examples = 2000
  config.preflight = True  # seconds of checks before the first epoch (cnn_val/preflight.py)
  # With the pre-flight checks, the LR range test on the run's own model, optimizer and data (200 steps from a
  # fresh initialisation, cnn_val/lr_range.py): lr_find.json, which the doctor reads to judge the learning rate.
  config.lr_range_test = True
  config.doctor = True  # end every run with diagnosis.json, report.md and plots/ (cnn_val/diagnose.py)
  # > 0: stop when validation accuracy has not improved for this many evaluations (the test split is then
  # evaluated with the final and the best checkpoint; early_stopped.json says when; the run counts as finished).
  config.early_stopping_patience = 0
  # > 0 (e.g. 0.999): keep an exponential moving average of the weights (BatchNorm statistics too; TensorFlow's
  # warm-up min(decay, (1 + step) / (10 + step))), evaluated beside them: metrics.jsonl ema_val_* and ema_test_*.
  config.ema_decay = 0.0
  # The loss: 0 = cross-entropy; q in (0, 1]: the generalized cross-entropy (1 - p^q) / q, robust to noisy labels
  # (q = 1: MAE; `train_loss` still logs the cross-entropy).
  config.gce_q = 0.0
  config.profile_steps = 0  # > 0: a JAX profiler trace of this many train steps in workdir/profile (TensorBoard)
  config.eval_every_epochs = 1  # evaluate on validation and checkpoint every N epochs (and after the last)

  config.data = ml_collections.ConfigDict()
  config.data.name = "fashion_mnist"  # any TFDS image-classification dataset, 'image_folder' or 'npz'
  # image_folder: root/<split>/<class_name>/*.png|jpg (splits train, validation, test); npz: the .npz file
  # (train_image, train_label, ...; cnn_val/data/npz.py), which trains without TensorFlow
  config.data.root = ""
  config.data.image_size = 0  # image_folder: 0 = keep (one size required), S or (H, W) to resize
  config.data.channels = 0  # image_folder: 1 grayscale, 3 RGB, 0 = as most training images are stored
  config.data.data_dir = ""  # TFDS data_dir; '' = TFDS's default (TFDS_DATA_DIR or ~/tensorflow_datasets)
  config.data.train_split = "train"
  config.data.test_split = "test"  # '' = no test evaluation
  config.data.validation_fraction = 0.1  # held out of the end of train_split
  config.data.max_train_examples = 0  # 0 = all; otherwise the first N of the training part (quick runs)
  config.data.max_eval_examples = 0  # 0 = all; caps validation and test (quick runs and tests only)
  # Drop training images that also occur (byte for byte) in validation or test: the fix for leakage.
  config.data.remove_cross_split_duplicates = False
  # A JSON file {"indices": [...]} of training examples to leave out (indices into the training split as
  # loaded): the doctor's label_issues.json, its fix for likely-wrong labels. '' = none.
  config.data.exclude_train_examples = ""
  # A JSON file {"indices": [...], "labels": [...]}: these training examples get these labels (the doctor's
  # label_issues.json: each flagged example relabelled with the class the model sees). '' = none.
  config.data.relabel_train_examples = ""
  # A JSON file {"transition": [[...], ...]}: row i holds P(given label j | true class i) (the doctor's
  # noise_transition.json, cleanlab's estimate). The loss is forward-corrected for label noise (Patrini et al.,
  # 2017): the given label's cross-entropy under softmax(logits) @ T. '' = off.
  config.data.noise_transition = ""
  # Keep only the first fraction of the training split as loaded (after the scenario and the fixes above);
  # nested subsets, so the doctor's learning curve trains on 1/4, 1/2 and all of the same data. 1 = all.
  config.data.train_fraction = 1.0
  config.data.download = True  # may TFDS download a dataset that is not prepared (needs internet)

  # Fault scenarios (cnn_val/data/scenarios.py): seeded changes to the data that reproduce a known cause
  # of stagnating validation accuracy. All off here; configs/faults/*.py switch one on each.
  config.data.scenario = ml_collections.ConfigDict()
  config.data.scenario.seed = 0  # fixes the fault's draws, independently of config.seed
  config.data.scenario.orientation_pairs = ()  # ((a, b), ...): class b := class a upside down
  config.data.scenario.imbalance_ratio = 0.0  # rho > 1: long-tailed training set (n_max / n_min)
  config.data.scenario.minority_classes = ()  # () = exponential tail over all classes; else these get n_max/rho
  config.data.scenario.label_noise = 0.0  # fraction of training labels replaced
  config.data.scenario.label_noise_kind = "symmetric"  # symmetric, pair
  config.data.scenario.train_brightness = 1.0  # lighting shift: training pixels times this (< 1 darker)
  config.data.scenario.train_contrast = 1.0  # lighting shift: training contrast times this (< 1 flatter)
  config.data.scenario.duplicates = 0  # validation examples copied into training (leakage)
  config.data.scenario.near_duplicates = 0  # validation examples copied, moved a pixel and noised (leakage)
  config.data.scenario.shortcut_classes = ()  # a lighting shortcut: these classes' training images only ...
  config.data.scenario.shortcut_brightness = 1.0  # ... times this (validation and test keep their lighting)
  config.data.scenario.missing_classes = ()  # classes removed from training (kept in validation and test)
  config.data.scenario.colorize = 0.0  # s > 0: a coloured variant (each image a random hue at saturation s)
  config.data.scenario.colour_shortcut_classes = ()  # a colour shortcut: these classes' training images ...
  config.data.scenario.colour_shortcut_hue = 0.0  # ... all get this hue (0 red, 1/3 green, 2/3 blue)

  # On-device augmentation of training images (cnn_val/augment.py). Keras ImageDataGenerator's names,
  # meanings and units; None = the preset's value (or off). Presets: none, characters, natural.
  config.augment = ml_collections.ConfigDict()
  config.augment.preset = "none"
  config.augment.rotation_range = placeholder(float)  # degrees
  config.augment.width_shift_range = placeholder(float)  # fraction of width (< 1) or pixels
  config.augment.height_shift_range = placeholder(float)  # fraction of height (< 1) or pixels
  config.augment.shear_range = placeholder(float)  # degrees
  config.augment.zoom_range = placeholder(object)  # z (factors in [1 - z, 1 + z]) or (lo, hi)
  config.augment.horizontal_flip = placeholder(bool)
  config.augment.vertical_flip = placeholder(bool)
  config.augment.fill_mode = placeholder(str)  # nearest, constant, reflect, wrap
  config.augment.cval = placeholder(float)  # constant fill, on the [0, 1] input scale
  config.augment.brightness = placeholder(float)  # add U(-b, b)
  config.augment.contrast = placeholder(float)  # scale about the image mean by U(1 - c, 1 + c)
  config.augment.gamma = placeholder(float)  # x ** e, log e ~ U(-log(1 + g), log(1 + g))
  config.augment.hue = placeholder(float)  # RGB only: turn the hue by U(-h, h) of a circle (h <= 0.5)
  config.augment.saturation = placeholder(float)  # RGB only: scale the saturation by U(max(0, 1 - s), 1 + s)
  config.augment.standardize = placeholder(bool)  # per-image standardization (train and eval)

  # Class-imbalance levers (cnn_val/data/balance.py), from the training split's class counts.
  config.imbalance = ml_collections.ConfigDict()
  config.imbalance.class_weighting = "none"  # none, inverse, effective_number
  config.imbalance.beta = 0.999  # effective_number (Cui et al. 2019)
  config.imbalance.resampling = "none"  # none, oversample, undersample (each epoch class-balanced)
  # Deferred re-weighting (Cao et al., NeurIPS 2019, "LDAM-DRW"): this many epochs with every class weighing 1,
  # then class_weighting's weights; the features are learnt on the natural distribution. 0 = weighted throughout.
  config.imbalance.deferred_epochs = 0
  # Logit adjustment (Menon et al. 2021): the loss sees logits + tau * log(class prior); 0 = off, 1 = theirs.
  config.imbalance.logit_adjustment = 0.0

  config.model = ml_collections.ConfigDict()
  config.model.name = "SeedCNNDropout"  # SeedCNN, SeedCNNDropout, ConvNet, ResNet
  config.model.widths = (32, 64)  # ConvNet: channels per block; ResNet: channels per stage
  config.model.convs_per_block = 1  # ConvNet, SeedCNN, SeedCNNDropout: conv layers before each pool
  config.model.batchnorm = False  # ConvNet (and its hidden dense layer), SeedCNN, SeedCNNDropout: after each conv
  config.model.block_dropout_rate = 0.0  # SeedCNN, SeedCNNDropout, ConvNet: dropout after each block's max-pool
  config.model.hidden_units = 0  # ConvNet: 0 = no hidden dense layer in the head
  config.model.prior_bias_init = False  # output bias starts at log(training class prior)
  config.model.dropout_rate = 0.5  # SeedCNNDropout, ConvNet: dropout before the last dense layer
  config.model.depth = 20  # ResNet: 6n + 2
  config.model.width_multiplier = 1.0  # SeedCNN, SeedCNNDropout: every conv layer's channels times this (rounded, >= 1)
  config.model.extra_blocks = 0  # SeedCNN, SeedCNNDropout: VALID conv-relu-maxpool blocks after the seed's, 2x wider
  config.model.kernel_init = "lecun_normal"  # SeedCNN, SeedCNNDropout: lecun_normal (Flax) or glorot_uniform (Keras)
  # How convolutions and max-pools are computed (same parameters and results either way; see fast_ops.py):
  # auto = the fast CPU rewrites (matmul, reshape) on CPU, XLA's own ops on GPU/TPU.
  config.model.conv_impl = "auto"  # auto, xla, matmul
  config.model.pool_impl = "auto"  # auto, xla, reshape

  config.optim = ml_collections.ConfigDict()
  config.optim.optimizer = "adam"  # adam, adamw, sgd
  config.optim.learning_rate = 1e-3
  config.optim.schedule = "exponential"  # constant, exponential, cosine, warmup_cosine
  config.optim.decay_steps = 5_000  # exponential: Keras ExponentialDecay semantics
  config.optim.decay_rate = 0.7
  config.optim.staircase = False
  config.optim.warmup_epochs = 0.0  # warmup_cosine
  config.optim.cosine_alpha = 0.0  # cosine schedules end at learning_rate * cosine_alpha
  config.optim.b1 = 0.9
  config.optim.b2 = 0.999
  config.optim.eps = 1e-7  # Keras' Adam epsilon
  config.optim.momentum = 0.9  # sgd
  config.optim.nesterov = False  # sgd
  config.optim.weight_decay = 0.0
  config.optim.weight_decay_mode = "decoupled"  # decoupled (masked) or l2
  config.optim.grad_clip_norm = 0.0  # 0 = no clipping
  return config
