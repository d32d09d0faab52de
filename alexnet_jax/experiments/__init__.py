"""Experiments beside the ImageNet run.

  cifar10  Fig. 1: ReLU against tanh on CIFAR-10, by the paper's protocol
           (`python -m alexnet_jax.experiments.cifar10`).
"""
