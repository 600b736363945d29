"""ResNet-20 on CIFAR-10 from TFDS, for machines with internet and an accelerator.

    python -m cnn_val.main --config=configs/cifar10_resnet.py --workdir=runs/cifar10_resnet20

SGD with Nesterov momentum 0.9, batch 128, lr 0.1 with 5 warmup epochs and cosine decay, decoupled weight
L2 weight decay 5e-4 on kernels only (as in the paper), 160 epochs. Without
augmentation (random crops and flips come with on-device augmentation, a later issue) expect well below
the 91.25% He et al. report with it. Not measured here: CIFAR-10 needs internet to download, and
160 epochs an accelerator (the H100 check ran its step at 80k images/s at batch 512).
"""

from cnn_val.configs import default


def get_config():
  config = default.get_config()
  config.data.name = "cifar10"
  config.num_epochs = 160
  config.batch_size = 128
  config.eval_batch_size = 1000
  config.log_every_steps = 100
  config.model.name = "ResNet"
  config.model.depth = 20
  config.model.widths = (16, 32, 64)
  config.optim.optimizer = "sgd"
  config.optim.learning_rate = 0.1
  config.optim.momentum = 0.9
  config.optim.nesterov = True
  config.optim.schedule = "warmup_cosine"
  config.optim.warmup_epochs = 5.0
  config.optim.weight_decay = 5e-4
  config.optim.weight_decay_mode = "l2"
  return config
