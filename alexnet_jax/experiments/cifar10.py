"""Fig. 1 (Sec. 3.1): ReLU against tanh in a four-layer CNN on CIFAR-10, by the paper's protocol.

  python -m alexnet_jax.experiments.cifar10 --config=configs/cifar10_relu_vs_tanh.py --workdir=runs/fig1

The caption: "the learning rates for each network were chosen independently to make
training as fast as possible". So for each activation this searches the learning rate:
every rate of `lr_grid` (largest first), then the geometric midpoints between the best and
its grid neighbours. A trial trains from the seed's initial weights (the same for both
activations) and ends when its training error reaches `target_error` (it counts), when it
can no longer beat the best trial so far (more epochs than the best needed; `early_stop`),
when its loss turns NaN or Inf or its error is still at chance after `chance_epochs` epochs
(it failed), or after `num_epochs`. The winner needs the fewest epochs; ties go to the lower
training error in that epoch, then to the smaller rate, so early stopping cannot change it.

The training error of an epoch is the mistakes on each minibatch, counted before that
minibatch's update, over the epoch's examples. Writes <workdir>/figure1_relu_vs_tanh.png
(the two winning runs) and <workdir>/figure1.json (every trial, the chosen rates, the
epochs-to-target and their ratio: the paper's is six), and prints a summary.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import sys
import time
from typing import Callable, Iterator

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

from alexnet_jax import evaluate, storage

FIGURE_SIZE = (6, 4.5)  # Inches; at DPI 100 the PNG is 600x450 pixels.
DPI = 100
IMAGE_SIZE = 32
ACTIVATIONS = {'relu': jax.nn.relu, 'tanh': jnp.tanh}
POOL_TYPES = ('max', 'avg')
POOL_PADDINGS = ('cuda_convnet', 'valid')
INITS = ('gaussian', 'lecun')
MEANS = ('image', 'channel')


# ----------------------------------------------------------------------------- config


def check_config(config) -> None:
  """Raises ValueError, one line saying what to change, for a config the search cannot run."""
  grid = tuple(config.lr_grid)
  if not grid:
    raise ValueError('lr_grid is empty: give at least one learning rate, '
                     'e.g. --config.lr_grid="(0.01, 0.03, 0.1)".')
  bad = [r for r in grid if not isinstance(r, (int, float)) or not math.isfinite(r) or r <= 0]
  if bad:
    raise ValueError(f'lr_grid has rates that are not positive numbers: {bad}; '
                     'every learning rate must be > 0.')
  if not 0 < config.target_error < 1:
    raise ValueError(f'target_error={config.target_error} is outside (0, 1): give a training '
                     'error rate, e.g. --config.target_error=0.25.')
  if config.num_epochs < 1:
    raise ValueError(f'num_epochs={config.num_epochs}: give at least 1.')
  unknown = [a for a in config.activations if a not in ACTIVATIONS]
  if unknown or not config.activations:
    raise ValueError(f'activations={tuple(config.activations)}: use relu and/or tanh.')
  convs = len(config.conv_features)
  if len(config.pool_types) != convs or any(p not in POOL_TYPES for p in config.pool_types):
    raise ValueError(f'pool_types={tuple(config.pool_types)}: give one of {POOL_TYPES} per conv '
                     f'layer ({convs}).')
  if config.pool_padding not in POOL_PADDINGS:
    raise ValueError(f'pool_padding={config.pool_padding!r}: use one of {POOL_PADDINGS}.')
  if any(not 1 <= i <= convs for i in config.rnorm_after):
    raise ValueError(f'rnorm_after={tuple(config.rnorm_after)}: conv blocks are numbered 1..{convs}.')
  layers = convs + len(config.fc_hidden) + 1
  if config.init not in INITS:
    raise ValueError(f'init={config.init!r}: use one of {INITS}.')
  if config.init == 'gaussian' and len(config.init_std) != layers:
    raise ValueError(f'init_std has {len(config.init_std)} values for {layers} weight layers: '
                     'give one per conv, hidden fc and fc10 layer.')
  if config.mean not in MEANS:
    raise ValueError(f'mean={config.mean!r}: use one of {MEANS}.')


# ------------------------------------------------------------------------------ network


@dataclasses.dataclass(frozen=True)
class Network:
  """What apply() needs of the config: hashable, so that jit can close over it."""
  activation: str
  pool_types: tuple[str, ...]
  pool_window: int
  pool_stride: int
  pool_padding: str
  rnorm_after: tuple[int, ...]
  rnorm_size: int
  rnorm_scale: float
  rnorm_power: float

  @classmethod
  def from_config(cls, config, activation: str) -> Network:
    return cls(activation, tuple(config.pool_types), config.pool_window, config.pool_stride,
               config.pool_padding, tuple(config.rnorm_after), config.rnorm_size,
               float(config.rnorm_scale), float(config.rnorm_power))


def pooled_size(size: int, window: int, stride: int, padding: str) -> int:
  if padding == 'cuda_convnet':  # layer.py: ceil((imgSize - sizeX) / stride) + 1.
    return -(-(size - window) // stride) + 1
  return (size - window) // stride + 1


def param_shapes(config) -> dict[str, dict[str, tuple[int, ...]]]:
  """Weight layers in order: conv1.., the hidden fc layers fc1.., then fc10."""
  size, k = IMAGE_SIZE, config.kernel_size
  shapes, channels = {}, 3
  for i, features in enumerate(config.conv_features, start=1):
    shapes[f'conv{i}'] = {'kernel': (k, k, channels, features), 'bias': (features,)}
    channels = features
    size = pooled_size(size, config.pool_window, config.pool_stride, config.pool_padding)
  inputs = size * size * channels
  for i, units in enumerate(config.fc_hidden, start=1):
    shapes[f'fc{i}'] = {'kernel': (inputs, units), 'bias': (units,)}
    inputs = units
  shapes['fc10'] = {'kernel': (inputs, 10), 'bias': (10,)}
  return shapes


def init_params(seed: int, config):
  """The seed's weights, whatever the activation: 'gaussian' N(0, init_std^2) per layer as
  cuda-convnet's initW, or 'lecun' N(0, 1/fan_in); zero biases (cuda-convnet's initB).
  Drawn with NumPy, as cuda-convnet's layer.py did (and jax.random's first compile would
  cost this command seconds for a few hundred thousand numbers)."""
  params = {}
  for i, (name, shape) in enumerate(param_shapes(config).items()):
    fan_in = int(np.prod(shape['kernel'][:-1]))
    std = 1 / np.sqrt(fan_in) if config.init == 'lecun' else config.init_std[i]
    kernel = np.random.default_rng([seed, i]).standard_normal(shape['kernel']) * std
    params[name] = {'kernel': jnp.asarray(kernel, jnp.float32), 'bias': jnp.zeros(shape['bias'])}
  return params


def pool(x, kind: str, window: int, stride: int, padding: str):
  """Max or average pooling of [N, H, W, C]; 'cuda_convnet' clips the last window at the
  border and an average divides by the pixels inside the image, as kLocalPool does."""
  size = x.shape[1]
  out = pooled_size(size, window, stride, padding)
  extra = max((out - 1) * stride + window - size, 0)  # Past the bottom/right edge.
  pads = ((0, 0), (0, extra), (0, extra), (0, 0))
  dims, strides = (1, window, window, 1), (1, stride, stride, 1)
  if kind == 'max':
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, dims, strides, pads)
  total = jax.lax.reduce_window(x, 0.0, jax.lax.add, dims, strides, pads)
  inside = jax.lax.reduce_window(jnp.ones((1, size, size, 1), x.dtype), 0.0, jax.lax.add, dims,
                                 strides, pads)
  return total / inside


def same_map_response_norm(x, size: int, scale: float, power: float):
  """cuda-convnet's rnorm: a / (1 + scale / size^2 * sum of a^2 over the size x size window
  centred on it, within its own map, clipped at the border)^power."""
  before = size // 2  # conv_util.cu: the window starts at -sizeX/2 (C division) from the unit.
  pads = ((0, 0), (before, size - 1 - before), (before, size - 1 - before), (0, 0))
  sums = jax.lax.reduce_window(x * x, 0.0, jax.lax.add, (1, size, size, 1), (1, 1, 1, 1), pads)
  return x * (1 + scale / size**2 * sums) ** -power


def apply(params, images, net: Network):
  """Logits [N, 10] of images [N, 32, 32, 3]: conv-activation-pool(-norm) blocks, fc layers."""
  act = ACTIVATIONS[net.activation]
  x = images
  convs = sorted((n for n in params if n.startswith('conv')), key=lambda n: int(n[4:]))
  for i, name in enumerate(convs, start=1):
    x = jax.lax.conv_general_dilated(x, params[name]['kernel'], (1, 1), 'SAME',
                                     dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    # The cfgs put conv1's neuron on pool1 (after a max); both activations are monotonic,
    # so activation-then-max is the same function.
    x = act(x + params[name]['bias'])
    x = pool(x, net.pool_types[i - 1], net.pool_window, net.pool_stride, net.pool_padding)
    if i in net.rnorm_after:
      x = same_map_response_norm(x, net.rnorm_size, net.rnorm_scale, net.rnorm_power)
  x = x.reshape(x.shape[0], -1)
  hidden = sorted((n for n in params if n.startswith('fc') and n != 'fc10'), key=lambda n: int(n[2:]))
  for name in hidden:  # layers-80sec.cfg's fc64 (neuron=relu): the compared activation here.
    x = act(x @ params[name]['kernel'] + params[name]['bias'])
  return x @ params['fc10']['kernel'] + params['fc10']['bias']


def count_errors(logits, labels) -> jax.Array:
  """Top-1 errors by evaluate.error_counts' rule: ties and non-finite rows are wrong."""
  return evaluate.error_counts(logits, labels, jnp.ones(labels.shape, bool))[0]


def make_train_step(config, activation: str):
  """(momentum transform, jitted step); the step takes the learning rate as an argument, so
  one compilation serves every trial of the search."""
  net = Network.from_config(config, activation)
  # optax.sgd(lr, momentum) is trace(momentum) then a scale by -lr; with a constant rate it
  # equals Sec. 5's rule (alexnet_jax.optim). No weight decay: Fig. 1 has no regularisation.
  tx = optax.trace(decay=config.momentum)
  bias_multiplier = config.bias_lr_multiplier

  def loss_fn(params, images, labels):
    logits = apply(params, images, net)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return loss, count_errors(logits, labels)

  @jax.jit
  def train_step(params, opt_state, images, labels, learning_rate):
    (loss, errors), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, images, labels)
    # The trace is linear, so scaling bias gradients is a bias learning rate times the multiplier.
    grads = {n: {'kernel': g['kernel'], 'bias': g['bias'] * bias_multiplier} for n, g in grads.items()}
    trace, opt_state = tx.update(grads, opt_state)
    params = jax.tree.map(lambda p, t: p - learning_rate * t, params, trace)
    return params, opt_state, loss, errors

  return tx, train_step


# ---------------------------------------------------------------------------- training


def load_cifar10(config) -> tuple[np.ndarray, np.ndarray]:
  """(images [N, 32, 32, 3] float32 on [0, input_scale] less the mean image or the
  per-channel mean, as config.mean says; labels [N])."""
  ds = tfds.load(config.dataset, split=config.split, data_dir=config.data_dir, as_supervised=True)
  # Batched reads, not batch_size=-1: the latter needs a known size, which mock data lacks.
  batches = list(tfds.as_numpy(ds.batch(10_000)))
  images = np.concatenate([b[0] for b in batches])
  labels = np.concatenate([b[1] for b in batches])
  if config.max_examples > 0:
    images, labels = images[:config.max_examples], labels[:config.max_examples]
  images = images.astype(np.float32) * np.float32(config.input_scale / 255.0)
  images -= images.mean(axis=0) if config.mean == 'image' else images.mean(axis=(0, 1, 2))
  return images, labels.astype(np.int32)


def duration(seconds: float) -> str:
  seconds = int(round(seconds))
  if seconds >= 3600:
    return f'{seconds // 3600}h{seconds // 60 % 60:02d}m'
  return f'{seconds // 60}m{seconds % 60:02d}s'


def train_epochs(config, activation: str, learning_rate: float, images, labels, *, seed: int,
                 max_epochs: int, trainer=None, label: str = '') -> Iterator[tuple[float, bool]]:
  """Trains from the seed's initial weights and data order, yielding (training error, every
  loss finite) after each epoch, for as long as the caller asks. Prints each epoch and, at
  most every config.progress_seconds, a progress line with images/s and the trial's ETA
  to max_epochs (the first step, which compiles, is left out of the rate)."""
  batch_size = min(config.batch_size, len(images))
  steps = len(images) // batch_size  # Whole batches only: one compiled shape.
  tx, train_step = trainer or make_train_step(config, activation)
  params = init_params(seed, config)
  opt_state = tx.init(params)
  order_rng = np.random.default_rng(seed)
  rate = jnp.float32(learning_rate)
  label = label or f'{activation} lr={learning_rate:.4g}'
  clock, done, last_print = None, 0, time.monotonic()
  epoch = 0
  while True:
    epoch += 1
    order = order_rng.permutation(len(images))
    mistakes, finite = jnp.zeros(()), jnp.array(True)
    for s in range(steps):
      idx = order[s * batch_size:(s + 1) * batch_size]
      params, opt_state, loss, wrong = train_step(params, opt_state, images[idx], labels[idx], rate)
      mistakes, finite = mistakes + wrong, finite & jnp.isfinite(loss)
      if clock is None:
        loss.block_until_ready()
        clock = time.monotonic()  # After the compiling step.
      else:
        done += batch_size
      now = time.monotonic()
      if now - last_print >= config.progress_seconds and done:
        speed = done / (now - clock)
        left = (max_epochs - epoch) * steps + steps - s - 1
        print(f'  {label} epoch {epoch}/{max_epochs} step {s + 1}/{steps}: {speed:,.0f} images/s, '
              f'at most {duration(left * batch_size / speed)} left in this trial', flush=True)
        last_print = now
    error = float(mistakes) / (steps * batch_size)
    speed = done / max(time.monotonic() - clock, 1e-9)
    print(f'  {label} epoch {epoch}/{max_epochs}: training error {error:.4f} '
          f'({speed:,.0f} images/s)', flush=True)
    yield error, bool(finite)


# ------------------------------------------------------------------------------ search


@dataclasses.dataclass
class Trial:
  learning_rate: float
  training_error: list[float]
  status: str  # 'reached', 'not reached' (num_epochs ran out), 'stopped' (could not win), 'diverged'.
  epochs_to_target: int | None = None
  note: str = ''

  def rank(self) -> tuple:
    """Fewest epochs, then lowest training error in that epoch, then the smaller rate."""
    return (self.epochs_to_target, self.training_error[self.epochs_to_target - 1], self.learning_rate)


def run_trial(epochs: Iterator[tuple[float, bool]], learning_rate: float, *, target: float,
              max_epochs: int, num_epochs: int, chance_error: float, chance_epochs: int) -> Trial:
  """Applies the stopping rules to one trial's epochs (an iterator of (error, loss finite))."""
  errors = []
  for error, finite in epochs:
    errors.append(error)
    epoch = len(errors)
    if not finite:  # Before the target: a diverged run never counts, whatever its error.
      return Trial(learning_rate, errors, 'diverged', note=f'loss NaN or Inf in epoch {epoch}')
    if error <= target:
      return Trial(learning_rate, errors, 'reached', epoch)
    if epoch >= chance_epochs and error >= chance_error:
      return Trial(learning_rate, errors, 'diverged',
                   note=f'training error {error:.3f} >= {chance_error} after {epoch} epochs')
    if epoch >= max_epochs:
      break
  if len(errors) >= num_epochs or max_epochs >= num_epochs:
    return Trial(learning_rate, errors, 'not reached')
  return Trial(learning_rate, errors, 'stopped', note=f'could not beat {max_epochs} epochs')


def search_learning_rate(epochs_fn: Callable[[float, int], Iterator[tuple[float, bool]]], grid,
                         *, target: float, num_epochs: int, refine: bool, early_stop: bool,
                         chance_error: float, chance_epochs: int,
                         log: Callable[[str], None] = print) -> tuple[list[Trial], Trial | None]:
  """Every trial and the winner (None when no rate reached the target).

  epochs_fn(rate, max_epochs) gives a fresh trial's epochs. The grid runs largest rate
  first: large rates reach the target or diverge soonest, which bounds the slow ones early.
  """
  trials, best = [], None
  planned = len(grid) + (2 if refine else 0)

  def attempt(rate):
    nonlocal best
    limit = num_epochs
    if early_stop and best is not None:
      limit = min(num_epochs, best.epochs_to_target)  # More epochs than the best cannot win.
    log(f'trial {len(trials) + 1} of up to {planned}: learning rate {rate:.4g}, at most {limit} epochs')
    trial = run_trial(epochs_fn(rate, limit), rate, target=target, max_epochs=limit,
                      num_epochs=num_epochs, chance_error=chance_error, chance_epochs=chance_epochs)
    trials.append(trial)
    if trial.status == 'reached' and (best is None or trial.rank() < best.rank()):
      best = trial
    detail = f' in {trial.epochs_to_target} epochs' if trial.epochs_to_target else ''
    log(f'  -> {trial.status}{detail}' + (f' ({trial.note})' if trial.note else ''))

  ascending = sorted(set(float(r) for r in grid))
  for rate in reversed(ascending):
    attempt(rate)
  if refine and best is not None:
    i = ascending.index(best.learning_rate)
    centre = best.learning_rate
    for j in (i - 1, i + 1):
      if 0 <= j < len(ascending):
        attempt(math.sqrt(centre * ascending[j]))
  return trials, best


def best_effort(trials: list[Trial]) -> Trial:
  """The trial to plot when none reached the target: the lowest training error reached."""
  return min(trials, key=lambda t: (min(e if math.isfinite(e) else 1.0 for e in t.training_error),
                                    t.learning_rate))


# ---------------------------------------------------------------------- figure, report


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
  """The two winning runs (each stopped at the target, so the curves end there)."""
  fig, ax = plt.subplots(figsize=FIGURE_SIZE, dpi=DPI)
  styles = {'relu': '-', 'tanh': '--'}
  for activation, errors in summary['training_error'].items():
    ax.plot(np.arange(1, len(errors) + 1), errors, styles.get(activation, ':'), marker='.',
            label=f'{activation}, lr {summary["learning_rate"][activation]:.3g}')
  ax.axhline(summary['target_error'], color='grey', linewidth=0.8)
  reach, ratio = summary['epochs_to_target'], summary['tanh_over_relu']
  # A curve that never reached the target is its activation's lowest-error trial.
  text = ', '.join(f'{a} (lr {summary["learning_rate"][a]:.3g}): '
                   f'{"not reached (lowest-error trial)" if e is None else f"epoch {e}"}'
                   for a, e in reach.items())
  ratio_text = 'tanh/ReLU: n/a' if ratio is None else f'tanh/ReLU = {ratio:.1f}x (paper: 6x)'
  ax.set_title(f'{summary["target_error"]:.0%} training error, each activation at its fastest rate; '
               f'{ratio_text}\n{text}', fontsize=8)
  ax.set_xlabel('epochs')
  ax.set_ylabel('training error rate')
  ax.set_ylim(0, 1)
  ax.legend()
  fig.subplots_adjust(left=0.12, right=0.97, top=0.88, bottom=0.12)
  png = io.BytesIO()
  fig.savefig(png, format='png', dpi=DPI)
  storage.write_whole(path, png.getvalue())  # A local file or an object (gs://...).
  plt.close(fig)


def spread(values: list[int | None]) -> dict:
  reached = [v for v in values if v is not None]
  if not reached:
    return {'reached': 0, 'runs': len(values)}
  return {'reached': len(reached), 'runs': len(values), 'min': min(reached), 'max': max(reached),
          'mean': float(np.mean(reached)), 'std': float(np.std(reached))}


def report(summary: dict) -> str:
  lines = []
  target, num_epochs = summary['target_error'], summary['num_epochs']
  for activation, search in summary['search'].items():
    lines.append(f'{activation}: learning-rate search for {target:.0%} training error '
                 f'(at most {num_epochs} epochs; {search["epochs_trained"]} epochs trained in all)')
    lines.append(f'  {"rate":>8}  {"result":<12} {"epochs to target":>16}  epochs run')
    for t in search['trials']:
      reach = '-' if t['epochs_to_target'] is None else str(t['epochs_to_target'])
      note = f'  ({t["note"]})' if t['note'] else ''
      lines.append(f'  {t["learning_rate"]:>8.4g}  {t["status"]:<12} {reach:>16}  '
                   f'{len(t["training_error"]):>10}{note}')
    if search['best_learning_rate'] is None:
      lines.append(f'  {activation}: no learning rate reached {target:.0%} training error in '
                   f'{num_epochs} epochs; the figure shows its lowest-error trial '
                   f'(lr {summary["learning_rate"][activation]:.4g}).')
    else:
      lines.append(f'  {activation}: best learning rate {search["best_learning_rate"]:.4g}, '
                   f'{search["epochs_to_target"]} epochs to {target:.0%}')
      if search['best_learning_rate'] in (min(search['lr_grid']), max(search['lr_grid'])):
        lines.append(f'  {activation}: the best rate is at the end of lr_grid; a rate beyond it '
                     'may be faster: widen --config.lr_grid.')
  ratio = summary['tanh_over_relu']
  lines.append('tanh/ReLU epochs-to-target: ' + ('n/a' if ratio is None else f'{ratio:.2f}x (paper: 6x)'))
  if summary.get('seeds'):
    for activation, s in summary['seed_spread'].items():
      lines.append(f'{activation} over seeds {list(summary["seeds"])}: {s}')
  return '\n'.join(lines)


# -------------------------------------------------------------------------- the command


def search_activation(config, activation: str, images, labels) -> tuple[list[Trial], Trial | None]:
  trainer = make_train_step(config, activation)  # One compilation for all the rates.

  def epochs_fn(rate, max_epochs):
    return train_epochs(config, activation, rate, images, labels, seed=config.seed,
                        max_epochs=max_epochs, trainer=trainer)

  print(f'{activation}: searching the learning rate over {tuple(config.lr_grid)}', flush=True)
  return search_learning_rate(
      epochs_fn, config.lr_grid, target=config.target_error, num_epochs=config.num_epochs,
      refine=config.refine, early_stop=config.early_stop, chance_error=config.chance_error,
      chance_epochs=config.chance_epochs, log=lambda line: print(f'{activation}: {line}', flush=True))


def rerun_seeds(config, winners: dict[str, Trial | None], images, labels) -> dict:
  """{seed: {activation: epochs-to-target, 'tanh_over_relu': ratio}}: the chosen rates again
  from each seed (config.seed's are the search's own runs), for how much the epochs move."""
  per_seed = {}
  for seed in (int(s) for s in config.seeds):
    reach = {}
    for a, best in winners.items():
      if best is None or seed == config.seed:
        reach[a] = best and best.epochs_to_target
        continue
      epochs = train_epochs(config, a, best.learning_rate, images, labels, seed=seed,
                            max_epochs=config.num_epochs,
                            label=f'{a} lr={best.learning_rate:.4g} seed={seed}')
      reach[a] = run_trial(epochs, best.learning_rate, target=config.target_error,
                           max_epochs=config.num_epochs, num_epochs=config.num_epochs,
                           chance_error=config.chance_error,
                           chance_epochs=config.chance_epochs).epochs_to_target
    reach['tanh_over_relu'] = (reach['tanh'] / reach['relu'] if reach.get('tanh') and reach.get('relu')
                               else None)
    per_seed[str(seed)] = reach
  return per_seed


def run(config, workdir: str) -> dict:
  check_config(config)
  images, labels = load_cifar10(config)
  results = {a: search_activation(config, a, images, labels) for a in config.activations}
  plotted = {a: best or best_effort(trials) for a, (trials, best) in results.items()}
  summary = summarise({a: t.training_error for a, t in plotted.items()}, config.target_error)
  summary['learning_rate'] = {a: t.learning_rate for a, t in plotted.items()}
  summary['num_epochs'] = config.num_epochs
  summary['seed'] = config.seed
  summary['network'] = {k: config[k] for k in (
      'network', 'conv_features', 'kernel_size', 'pool_types', 'pool_window', 'pool_stride',
      'pool_padding', 'rnorm_after', 'rnorm_size', 'rnorm_scale', 'rnorm_power', 'fc_hidden',
      'init', 'init_std', 'bias_lr_multiplier', 'input_scale', 'mean')}
  summary['search'] = {
      a: {'lr_grid': list(config.lr_grid), 'refine': config.refine, 'early_stop': config.early_stop,
          'best_learning_rate': best.learning_rate if best else None,
          'epochs_to_target': best.epochs_to_target if best else None,
          'epochs_trained': sum(len(t.training_error) for t in trials),
          'trials': [dataclasses.asdict(t) for t in trials]}
      for a, (trials, best) in results.items()}
  if config.seeds:
    summary['seeds'] = rerun_seeds(config, {a: best for a, (_, best) in results.items()}, images, labels)
    summary['seed_spread'] = {a: spread([s[a] for s in summary['seeds'].values()])
                              for a in config.activations}
  if jax.process_index() == 0:
    storage.path(workdir).mkdir(parents=True, exist_ok=True)
    plot(summary, str(storage.path(workdir) / 'figure1_relu_vs_tanh.png'))
    storage.write_whole(storage.path(workdir) / 'figure1.json', json.dumps(summary, indent=2))
  print(report(summary), flush=True)
  return summary


FLAGS = flags.FLAGS


def main(argv):
  del argv
  if not FLAGS.workdir or FLAGS.config is None:
    sys.exit('error: --config and --workdir are required.')
  try:
    check_config(FLAGS.config)
  except ValueError as e:
    sys.exit(f'error: {e}')
  run(FLAGS.config, FLAGS.workdir)


if __name__ == '__main__':
  # Defined here, not on import: the modules' flags would clash when imported together.
  flags.DEFINE_string('workdir', None, 'Where the figure and figure1.json go.')
  config_flags.DEFINE_config_file('config', None, 'configs/cifar10_relu_vs_tanh.py', lock_config=True)
  app.run(main)
