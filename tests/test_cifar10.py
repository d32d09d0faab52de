"""Fig. 1's CIFAR-10 ReLU/tanh pipeline, end to end on TFDS mock data."""

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from PIL import Image
import tensorflow_datasets as tfds

from alexnet_jax import cifar10
from configs import cifar10_relu_vs_tanh


def test_count_errors_matches_numpy():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(50, 10)).astype(np.float32)
  labels = rng.integers(0, 10, size=50)
  expected = np.sum(np.argmax(logits, -1) != labels)
  assert int(cifar10.count_errors(jnp.asarray(logits), jnp.asarray(labels))) == expected


def test_epochs_to_reach_and_ratio():
  summary = cifar10.summarise({'relu': [0.6, 0.3, 0.24, 0.1], 'tanh': [0.8, 0.5, 0.4, 0.3]}, 0.25)
  assert summary['epochs_to_target'] == {'relu': 3, 'tanh': None}
  assert summary['tanh_over_relu'] is None
  summary = cifar10.summarise({'relu': [0.2], 'tanh': [0.5, 0.4, 0.3, 0.25]}, 0.25)
  assert summary['tanh_over_relu'] == 4.0


def test_network_shapes_are_the_documented_ones():
  shapes = cifar10.param_shapes(cifar10_relu_vs_tanh.get_config())
  # 32 -> 15 -> 7 -> 3 after three 3/2 'VALID' pools.
  assert shapes['conv3']['kernel'] == (5, 5, 32, 64)
  assert shapes['fc']['kernel'] == (3 * 3 * 64, 10)


def test_figure1_end_to_end_on_mock_data(tmp_path):
  config = cifar10_relu_vs_tanh.get_config()
  config.num_epochs = 2
  config.batch_size = 16
  workdir = str(tmp_path / 'fig1')
  with tfds.testing.mock_data(num_examples=48):
    summary = cifar10.run(config, workdir)
    images, labels = cifar10.load_cifar10(config)
  with Image.open(os.path.join(workdir, 'figure1_relu_vs_tanh.png')) as image:
    assert image.size == (600, 450)
  with open(os.path.join(workdir, 'figure1.json')) as f:
    written = json.load(f)
  assert set(written['training_error']) == {'relu', 'tanh'}
  assert written['training_error'] == summary['training_error']
  # The errors again, by a replay of the documented procedure: the same init, epoch order
  # and updates, each minibatch's mistakes counted in NumPy before its update, over 48.
  for activation in ('relu', 'tanh'):
    tx = optax.sgd(config.learning_rate[activation], momentum=config.momentum)
    params = cifar10.init_params(jax.random.key(config.seed), config)
    opt_state = tx.init(params)
    train_step = cifar10.make_train_step(config, activation, tx)
    forward = jax.jit(functools.partial(cifar10.apply, activation=activation,
                                        pool_window=config.pool_window,
                                        pool_stride=config.pool_stride))
    order_rng = np.random.default_rng(config.seed)
    expected = []
    for _ in range(config.num_epochs):
      order, mistakes = order_rng.permutation(48), 0
      for s in range(3):
        idx = order[s * 16:(s + 1) * 16]
        logits = np.asarray(forward(params, images[idx]))
        mistakes += int(np.sum(np.argmax(logits, -1) != labels[idx]))
        params, opt_state, _, _ = train_step(params, opt_state, images[idx], labels[idx])
      expected.append(mistakes / 48)
    assert written['training_error'][activation] == pytest.approx(expected), activation
  assert images.shape == (48, 32, 32, 3) and labels.shape == (48,)
  np.testing.assert_allclose(images.mean(axis=(0, 1, 2)), 0.0, atol=1e-5)
