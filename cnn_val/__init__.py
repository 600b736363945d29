"""cnn_val: train CNN image classifiers in JAX/Flax and find out why validation accuracy stagnates."""

__version__ = "0.1.0"
