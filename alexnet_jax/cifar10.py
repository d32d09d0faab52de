"""Fig. 1 (Sec. 3.1): ReLU against tanh in a four-layer CNN on CIFAR-10.

  python -m alexnet_jax.cifar10 --config=configs/cifar10_relu_vs_tanh.py --workdir=runs/fig1

Trains the same network (configs/cifar10_relu_vs_tanh.py documents it) once per
activation, records the training error of every epoch (the mistakes on each minibatch,
counted before that minibatch's update, over the epoch's examples), and writes
<workdir>/figure1_relu_vs_tanh.png and <workdir>/figure1.json with the epochs each needed
to reach 25% training error and their ratio (the paper: six times fewer with ReLUs).
"""

from __future__ import annotations

import functools
import json
import os
import sys

from absl import app, flags
import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use('Agg')  # Files only.
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
from ml_collections import config_flags
import numpy as np
import optax
import tensorflow_datasets as tfds

from alexnet_jax import evaluate

FIGURE_SIZE = (6, 4.5)  # Inches; at DPI 100 the PNG is 600x450 pixels.
DPI = 100


# ------------------------------------------------------------------------------ network


def param_shapes(config) -> dict[str, dict[str, tuple[int, ...]]]:
  size, k = 32, config.kernel_size
  shapes, channels = {}, 3
  for i, features in enumerate(config.conv_features, start=1):
    shapes[f'conv{i}'] = {'kernel': (k, k, channels, features), 'bias': (features,)}
    channels = features
    size = (size - config.pool_window) // config.pool_stride + 1  # 'VALID' pooling.
  shapes['fc'] = {'kernel': (size * size * channels, 10), 'bias': (10,)}
  return shapes


def init_params(rng, config):
  """LeCun-normal weights (std 1/sqrt(fan_in)), zero biases: the same for both activations."""
  params = {}
  for i, (name, shape) in enumerate(param_shapes(config).items()):
    fan_in = int(np.prod(shape['kernel'][:-1]))
    params[name] = {
        'kernel': jax.random.normal(jax.random.fold_in(rng, i), shape['kernel']) / np.sqrt(fan_in),
        'bias': jnp.zeros(shape['bias']),
    }
  return params


def apply(params, images, *, activation: str, pool_window: int, pool_stride: int):
  """Logits [N, 10] of images [N, 32, 32, 3]: three conv-activation-pool blocks, fc."""
  act = {'relu': jax.nn.relu, 'tanh': jnp.tanh}[activation]
  x = images
  for name in sorted(n for n in params if n.startswith('conv')):
    x = jax.lax.conv_general_dilated(x, params[name]['kernel'], (1, 1), 'SAME',
                                     dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    x = act(x + params[name]['bias'])
    x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, pool_window, pool_window, 1),
                              (1, pool_stride, pool_stride, 1), 'VALID')
  x = x.reshape(x.shape[0], -1)
  return x @ params['fc']['kernel'] + params['fc']['bias']


def count_errors(logits, labels) -> jax.Array:
  """Top-1 errors by evaluate.error_counts' rule: ties and non-finite rows are wrong."""
  return evaluate.error_counts(logits, labels, jnp.ones(labels.shape, bool))[0]


def make_train_step(config, activation: str, tx):
  forward = functools.partial(apply, activation=activation, pool_window=config.pool_window,
                              pool_stride=config.pool_stride)

  def loss_fn(params, images, labels):
    logits = forward(params, images)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return loss, count_errors(logits, labels)

  @jax.jit
  def train_step(params, opt_state, images, labels):
    (loss, errors), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, images, labels)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss, errors

  return train_step


# ---------------------------------------------------------------------------- training


def load_cifar10(config) -> tuple[np.ndarray, np.ndarray]:
  """(images [N, 32, 32, 3] float32, per-channel mean removed, on [0, 1]; labels [N])."""
  ds = tfds.load(config.dataset, split=config.split, data_dir=config.data_dir, as_supervised=True)
  # Batched reads, not batch_size=-1: the latter needs a known size, which mock data lacks.
  batches = list(tfds.as_numpy(ds.batch(10_000)))
  images = np.concatenate([b[0] for b in batches])
  labels = np.concatenate([b[1] for b in batches])
  if config.max_examples > 0:
    images, labels = images[:config.max_examples], labels[:config.max_examples]
  images = images.astype(np.float32) / 255.0
  images -= images.mean(axis=(0, 1, 2))
  return images, labels.astype(np.int32)


def train_errors(config, activation: str, images, labels) -> list[float]:
  """Training error of each epoch for one activation."""
  batch_size = min(config.batch_size, len(images))
  steps = len(images) // batch_size  # Whole batches only: one compiled shape.
  # With a constant learning rate optax's momentum equals Sec. 5's rule (they differ only
  # when the rate changes: alexnet_jax.optim); no weight decay, as Fig. 1 uses no
  # regularisation.
  tx = optax.sgd(config.learning_rate[activation], momentum=config.momentum)
  params = init_params(jax.random.key(config.seed), config)
  opt_state = tx.init(params)
  train_step = make_train_step(config, activation, tx)
  rng = np.random.default_rng(config.seed)
  errors = []
  for epoch in range(config.num_epochs):
    order = rng.permutation(len(images))
    mistakes = 0
    for s in range(steps):
      idx = order[s * batch_size:(s + 1) * batch_size]
      params, opt_state, loss, wrong = train_step(params, opt_state, images[idx], labels[idx])
      mistakes += int(wrong)
    if not np.isfinite(float(loss)):
      raise FloatingPointError(f'{activation}: loss {float(loss)} in epoch {epoch + 1}; '
                               f'lower --config.learning_rate.{activation}.')
    errors.append(mistakes / (steps * batch_size))
    print(f'{activation} epoch {epoch + 1}: training error {errors[-1]:.4f}', flush=True)
  return errors


def epochs_to_reach(errors: list[float], target: float) -> int | None:
  """The first epoch (1-based) whose training error is at or below `target`."""
  for epoch, error in enumerate(errors, start=1):
    if error <= target:
      return epoch
  return None


def summarise(errors: dict[str, list[float]], target: float) -> dict:
  reach = {a: epochs_to_reach(e, target) for a, e in errors.items()}
  ratio = None
  if reach.get('relu') and reach.get('tanh'):
    ratio = reach['tanh'] / reach['relu']
  return {'training_error': errors, 'target_error': target, 'epochs_to_target': reach,
          'tanh_over_relu': ratio}


def plot(summary: dict, path: str) -> None:
  fig, ax = plt.subplots(figsize=FIGURE_SIZE, dpi=DPI)
  styles = {'relu': '-', 'tanh': '--'}
  for activation, errors in summary['training_error'].items():
    ax.plot(np.arange(1, len(errors) + 1), errors, styles.get(activation, ':'),
            label=activation)
  ax.axhline(summary['target_error'], color='grey', linewidth=0.8)
  reach, ratio = summary['epochs_to_target'], summary['tanh_over_relu']
  text = ', '.join(f'{a}: {"not reached" if e is None else f"epoch {e}"}' for a, e in reach.items())
  if ratio is not None:
    text += f'; tanh/ReLU = {ratio:.1f}x (paper: 6x)'
  ax.set_title(f'{summary["target_error"]:.0%} training error: {text}', fontsize=8)
  ax.set_xlabel('epochs')
  ax.set_ylabel('training error rate')
  ax.set_ylim(0, 1)
  ax.legend()
  fig.subplots_adjust(left=0.12, right=0.97, top=0.9, bottom=0.12)
  fig.savefig(path, dpi=DPI)
  plt.close(fig)


def run(config, workdir: str) -> dict:
  images, labels = load_cifar10(config)
  errors = {a: train_errors(config, a, images, labels) for a in config.activations}
  summary = summarise(errors, config.target_error)
  summary['learning_rate'] = {a: config.learning_rate[a] for a in config.activations}
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    plot(summary, os.path.join(workdir, 'figure1_relu_vs_tanh.png'))
    with open(os.path.join(workdir, 'figure1.json'), 'w') as f:
      json.dump(summary, f, indent=2)
  print(f"epochs to {config.target_error:.0%} training error: {summary['epochs_to_target']}; "
        f"tanh/ReLU ratio: {summary['tanh_over_relu']}")
  return summary


FLAGS = flags.FLAGS


def main(argv):
  del argv
  if not FLAGS.workdir or FLAGS.config is None:
    sys.exit('error: --config and --workdir are required.')
  run(FLAGS.config, FLAGS.workdir)


if __name__ == '__main__':
  # Defined here, not on import: the modules' flags would clash when imported together.
  flags.DEFINE_string('workdir', None, 'Where the figure and figure1.json go.')
  config_flags.DEFINE_config_file('config', None, 'configs/cifar10_relu_vs_tanh.py', lock_config=True)
  app.run(main)
