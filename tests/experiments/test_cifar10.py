"""Fig. 1's CIFAR-10 ReLU/tanh protocol: the learning-rate search on mock curves, the
cuda-convnet networks against a NumPy reading of their layer files, and the command end
to end on TFDS mock data."""

import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from PIL import Image
import tensorflow_datasets as tfds

from alexnet_jax.experiments import cifar10
from configs import cifar10_relu_vs_tanh

RULES = dict(target=0.25, num_epochs=20, chance_error=0.85, chance_epochs=5)


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


# ----------------------------------------------------------------- the search, mocked


def mock_epochs(curve_of, consumed):
  """epochs_fn for the search: rate -> its (error, finite) epochs; counts the epochs used."""
  def epochs_fn(rate, max_epochs):
    del max_epochs  # The search itself must stop the trial.
    for error, finite in curve_of(rate):
      consumed[rate] = consumed.get(rate, 0) + 1
      yield error, finite
  return epochs_fn


def speed(rate):  # Fastest at 0.05, slower by a Gaussian in log-rate either side.
  return 0.5 * math.exp(-math.log(rate / 0.05) ** 2 / 2)


def smooth_curve(rate):
  return [(0.9 * math.exp(-speed(rate) * t), True) for t in range(1, 200)]


def test_search_picks_the_rate_that_reaches_the_target_first():
  grid = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3)
  consumed = {}
  trials, best = cifar10.search_learning_rate(
      mock_epochs(smooth_curve, consumed), grid, refine=True, early_stop=True, log=lambda _: None,
      **RULES)
  # Refined around the grid's best (0.03, by the formula below): the midpoints to 0.01, 0.1.
  tried = sorted(t.learning_rate for t in trials)
  assert tried == pytest.approx(sorted(grid + (math.sqrt(0.03 * 0.01), math.sqrt(0.03 * 0.1))))
  # By hand: 0.9 exp(-s t) <= 0.25 first at t = ceil(ln(0.9 / 0.25) / s); the fewest wins.
  def epochs(rate):
    t = math.ceil(math.log(0.9 / 0.25) / speed(rate))
    return t if t <= RULES['num_epochs'] else None
  # The documented order: fewest epochs, then the lower error in that epoch, then the rate.
  expected = min((epochs(r), 0.9 * math.exp(-speed(r) * epochs(r)), r) for r in tried
                 if epochs(r) is not None)
  assert (best.epochs_to_target, best.learning_rate) == (expected[0], pytest.approx(expected[2]))
  assert best.learning_rate == pytest.approx(math.sqrt(0.03 * 0.1))  # Closest to 0.05.
  assert best.status == 'reached'


def random_curve(case, rate):
  """Curves with ties (whole-step errors), divergence and stalls, the same for a given rate."""
  rng = np.random.default_rng([case, int(round(rate * 1e9))])
  drops = rng.choice([0.0, 0.05, 0.1, 0.2], size=30, p=[0.3, 0.3, 0.3, 0.1])
  errors = np.clip(0.9 - np.cumsum(drops), 0.0, 1.0)
  finite = np.ones(30, bool)
  if rng.random() < 0.2:
    finite[rng.integers(0, 30):] = False
  return list(zip(errors.tolist(), finite.tolist()))


def test_early_stopping_never_changes_which_rate_wins():
  grid = (0.001, 0.01, 0.1, 1.0)
  saved = 0
  for case in range(150):
    results = {}
    for early_stop in (False, True):
      consumed = {}
      trials, best = cifar10.search_learning_rate(
          mock_epochs(lambda r, case=case: random_curve(case, r), consumed), grid, refine=True,
          early_stop=early_stop, log=lambda _: None, **RULES)
      results[early_stop] = (best and (best.learning_rate, best.epochs_to_target), consumed, trials)
    (full, full_cost, full_trials), (early, early_cost, _) = results[False], results[True]
    assert early == full, case
    # And the winner is the argmin of the full search's outcomes, by the documented order.
    reached = [t for t in full_trials if t.status == 'reached']
    if reached:
      key = min((t.epochs_to_target, t.training_error[-1], t.learning_rate) for t in reached)
      assert full == (key[2], key[0])
    else:
      assert full is None
    assert sum(early_cost.values()) <= sum(full_cost.values())
    saved += sum(full_cost.values()) - sum(early_cost.values())
  assert saved > 0  # The rule does stop trials early.


def test_a_diverging_rate_is_skipped():
  curves = {
      # NaN loss in epoch 1, though its error is under the target: diverged, never the winner.
      0.1: [(0.1, False)] * 10,
      0.03: [(0.8, True), (0.6, True), (0.4, True), (0.2, True)] + [(0.1, True)] * 10,
      # At chance for 5 epochs (chance_epochs), then fast: failed at epoch 5.
      0.01: [(0.9, True)] * 5 + [(0.05, True)] * 10,
  }
  trials, best = cifar10.search_learning_rate(
      mock_epochs(curves.get, {}), tuple(curves), refine=False, early_stop=False, log=lambda _: None,
      **RULES)
  status = {t.learning_rate: (t.status, len(t.training_error)) for t in trials}
  assert status == {0.1: ('diverged', 1), 0.03: ('reached', 4), 0.01: ('diverged', 5)}
  assert (best.learning_rate, best.epochs_to_target) == (0.03, 4)
  # With early stopping the 0.01 trial ends at the best's 4 epochs, before the chance rule.
  trials, best = cifar10.search_learning_rate(
      mock_epochs(curves.get, {}), tuple(curves), refine=False, early_stop=True, log=lambda _: None,
      **RULES)
  assert {t.learning_rate: t.status for t in trials}[0.01] == 'stopped'
  assert best.learning_rate == 0.03


# --------------------------------------------------------------- the network, by hand


def np_conv(x, w, b):  # cfg: stride=1, padding=2 for filterSize=5.
  k, p, size = w.shape[0], w.shape[0] // 2, x.shape[1]
  xp = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
  out = np.zeros(x.shape[:3] + (w.shape[3],))
  for dy in range(k):
    for dx in range(k):
      out += np.einsum('nhwc,cf->nhwf', xp[:, dy:dy + size, dx:dx + size], w[dy, dx])
  return out + b


def np_pool(x, kind, size=3, stride=2):
  """layer.py: outputsX = ceil((imgSize - sizeX) / stride) + 1; conv_util.cu's kLocalPool:
  windows from 0, clipped at the border, an average over the pixels inside."""
  n = x.shape[1]
  out = int(math.ceil((n - size) / stride)) + 1
  y = np.zeros((x.shape[0], out, out, x.shape[3]))
  for i in range(out):
    for j in range(out):
      window = x[:, i * stride:min(i * stride + size, n), j * stride:min(j * stride + size, n)]
      y[:, i, j] = window.max(axis=(1, 2)) if kind == 'max' else window.mean(axis=(1, 2))
  return y


def np_rnorm(x, size=3, scale=0.00005, power=0.75):
  """cuda-convnet rnorm: layer.py divides scale by size^2; kCNorm_fewfilter: window from
  -size/2, clipped; a * (1 + scale * sum a^2)^-pow."""
  n, y = x.shape[1], np.empty_like(x)
  for i in range(n):
    for j in range(n):
      y0, x0 = max(0, i - size // 2), max(0, j - size // 2)
      window = x[:, y0:i - size // 2 + size, x0:j - size // 2 + size]
      y[:, i, j] = x[:, i, j] * (1 + scale / size**2 * (window**2).sum(axis=(1, 2))) ** -power
  return y


def np_forward(p, x, layers, act):
  """The layer files in their order; the neuron where the file puts it (pool1 for conv1)."""
  for name, *arg in layers:
    if name.startswith('conv'):
      x = np_conv(x, p[name]['kernel'], p[name]['bias'])
    elif name == 'pool':
      x = np_pool(x, arg[0])
    elif name == 'rnorm':
      x = np_rnorm(x)
    elif name == 'neuron':
      x = act(x)
    elif name == 'flatten':
      x = x.reshape(x.shape[0], -1)
    else:
      x = x @ p[name]['kernel'] + p[name]['bias']
  return x


LAYERS_18PCT = [('conv1',), ('pool', 'max'), ('neuron',), ('rnorm',), ('conv2',), ('neuron',),
                ('pool', 'avg'), ('rnorm',), ('conv3',), ('neuron',), ('pool', 'avg'), ('flatten',),
                ('fc10',)]
LAYERS_80SEC = [('conv1',), ('pool', 'max'), ('neuron',), ('conv2',), ('neuron',), ('pool', 'avg'),
                ('conv3',), ('neuron',), ('pool', 'avg'), ('flatten',), ('fc1',), ('neuron',),
                ('fc10',)]


@pytest.mark.parametrize('preset,layers,shapes,stds', [
    # Pools 32 -> 16 -> 8 -> 4 by ceil((n - 3) / 2) + 1; fc10 sees 4 * 4 * 64 = 1024 inputs.
    ('layers_18pct', LAYERS_18PCT, {'conv1': (5, 5, 3, 32), 'conv2': (5, 5, 32, 32),
                                    'conv3': (5, 5, 32, 64), 'fc10': (1024, 10)},
     (1e-4, 1e-2, 1e-2, 1e-2)),
    ('layers_80sec', LAYERS_80SEC, {'conv1': (5, 5, 3, 32), 'conv2': (5, 5, 32, 32),
                                    'conv3': (5, 5, 32, 64), 'fc1': (1024, 64), 'fc10': (64, 10)},
     (1e-4, 1e-2, 1e-2, 1e-1, 1e-1)),
])
def test_network_matches_the_cited_layer_definitions(preset, layers, shapes, stds):
  config = cifar10_relu_vs_tanh.get_config(preset)
  assert {n: s['kernel'] for n, s in cifar10.param_shapes(config).items()} == shapes
  # The initW of each layer: the sample std within 5 standard errors (std / sqrt(2 n)).
  params = cifar10.init_params(0, config)
  for (name, shape), std in zip(shapes.items(), stds):
    kernel = np.asarray(params[name]['kernel'])
    assert abs(kernel.std() / std - 1) < 5 / math.sqrt(2 * kernel.size), name
    assert not np.any(np.asarray(params[name]['bias']))
  # The forward pass against NumPy, with weights large enough that normalisation matters.
  rng = np.random.default_rng(1)
  p = {n: {'kernel': rng.normal(size=s) * 2 / math.sqrt(np.prod(s[:-1])),
           'bias': rng.normal(size=s[-1:]) * 0.1} for n, s in shapes.items()}
  images = rng.uniform(-128, 128, size=(2, 32, 32, 3))  # cuda-convnet's 0..255, less the mean.
  for activation, act in (('relu', lambda a: np.maximum(a, 0)), ('tanh', np.tanh)):
    expected = np_forward(p, images, layers, act)
    got = np.asarray(jax.jit(cifar10.apply, static_argnums=2)(
        jax.tree.map(jnp.float32, p), jnp.float32(images), cifar10.Network.from_config(config, activation)))
    # float32 against float64 through <= 5 layers of <= 1024-term sums: ~1e-6 relative
    # each; 1e-4 of the logits' scale leaves room without hiding a wrong layer.
    np.testing.assert_allclose(got, expected, atol=1e-4 * np.abs(expected).max(), rtol=0)
    if activation == 'relu' and any(l[0] == 'rnorm' for l in layers):
      # Visible at this scale (tanh's outputs, at most 1, leave it a near no-op).
      without = np_forward(p, images, [l for l in layers if l[0] != 'rnorm'], act)
      assert np.abs(without - expected).max() > 100 * 1e-4 * np.abs(expected).max()


def test_the_earlier_net_stays_available():
  config = cifar10_relu_vs_tanh.get_config('lecun')
  shapes = {n: s['kernel'] for n, s in cifar10.param_shapes(config).items()}
  # Whole 3/2 windows only: 32 -> 15 -> 7 -> 3, so fc10 sees 3 * 3 * 64 = 576 inputs.
  assert shapes == {'conv1': (5, 5, 3, 32), 'conv2': (5, 5, 32, 32), 'conv3': (5, 5, 32, 64),
                    'fc10': (576, 10)}
  params = cifar10.init_params(0, config)
  for name, shape in shapes.items():  # LeCun normal: std 1/sqrt(fan_in), within 5 std errors.
    kernel = np.asarray(params[name]['kernel'])
    std = 1 / math.sqrt(np.prod(shape[:-1]))
    assert abs(kernel.std() / std - 1) < 5 / math.sqrt(2 * kernel.size), name
  net = cifar10.Network.from_config(config, 'relu')
  assert (net.pool_types, net.pool_padding, net.rnorm_after) == (('max',) * 3, 'valid', ())
  x = np.random.default_rng(0).normal(size=(2, 32, 32, 4)).astype(np.float32)
  expected = np.array([[[x[n, 2 * i:2 * i + 3, 2 * j:2 * j + 3].max(axis=(0, 1)) for j in range(15)]
                        for i in range(15)] for n in range(2)])
  np.testing.assert_array_equal(np.asarray(cifar10.pool(jnp.asarray(x), 'max', 3, 2, 'valid')), expected)
  assert (config.bias_lr_multiplier, config.input_scale, config.mean) == (1.0, 1.0, 'channel')


def test_both_activations_start_from_the_same_weights_and_order():
  config = cifar10_relu_vs_tanh.get_config()
  config.batch_size = 4
  images = np.random.default_rng(0).normal(size=(12, 32, 32, 3)).astype(np.float32)
  labels = np.arange(12, dtype=np.int32) % 10

  def seen(activation, seed):
    record = []

    def step(params, opt_state, batch_images, batch_labels, rate):  # Records, leaves params.
      record.append((jax.tree.map(np.asarray, params), np.asarray(batch_labels)))
      return params, opt_state, jnp.zeros(()), jnp.zeros(())

    epochs = cifar10.train_epochs(config, activation, 0.01, images, labels, seed=seed, max_epochs=2,
                                  trainer=(optax.trace(0.9), step))
    next(epochs), next(epochs)
    return record

  relu, tanh, other = seen('relu', 0), seen('tanh', 0), seen('relu', 1)
  assert len(relu) == 6
  for (p_relu, l_relu), (p_tanh, l_tanh) in zip(relu, tanh):
    jax.tree.map(np.testing.assert_array_equal, p_relu, p_tanh)
    np.testing.assert_array_equal(l_relu, l_tanh)
  assert not np.array_equal(relu[0][0]['conv1']['kernel'], other[0][0]['conv1']['kernel'])


# ------------------------------------------------------------------ the command itself


@pytest.mark.parametrize('field,value', [
    ('lr_grid', ()), ('lr_grid', (0.01, 0.0)), ('lr_grid', (-0.1,)),
    ('target_error', 0.0), ('target_error', 1.0), ('target_error', 1.5)])
def test_bad_input_is_a_one_line_error(tmp_path, field, value):
  config = cifar10_relu_vs_tanh.get_config()
  config[field] = value
  with pytest.raises(ValueError) as error:
    cifar10.run(config, str(tmp_path / 'fig1'))
  assert field in str(error.value) and '\n' not in str(error.value)
  assert not os.path.exists(tmp_path / 'fig1')  # Checked before any data or work.


def test_no_rate_reaching_the_target_is_reported_and_still_plotted(tmp_path, monkeypatch, capsys):
  config = cifar10_relu_vs_tanh.get_config()
  config.num_epochs, config.lr_grid = 3, (0.01, 0.1)
  curves = {0.01: [0.8, 0.7, 0.6], 0.1: [0.85, 0.75, 0.65]}

  def fake_epochs(config, activation, rate, images, labels, *, seed, max_epochs, trainer=None, label=''):
    del config, activation, images, labels, seed, max_epochs, trainer, label
    for error in curves[round(rate, 6)]:
      yield error, True

  monkeypatch.setattr(cifar10, 'train_epochs', fake_epochs)
  monkeypatch.setattr(cifar10, 'load_cifar10', lambda config: (np.zeros((4, 32, 32, 3)), np.zeros(4)))
  workdir = str(tmp_path / 'fig1')
  cifar10.run(config, workdir)
  out = capsys.readouterr().out
  for activation in ('relu', 'tanh'):
    assert f'{activation}: no learning rate reached 25% training error in 3 epochs' in out
  with open(os.path.join(workdir, 'figure1.json')) as f:
    written = json.load(f)
  assert written['search']['relu']['best_learning_rate'] is None
  assert written['training_error'] == {'relu': curves[0.01], 'tanh': curves[0.01]}  # Lowest error.
  assert written['tanh_over_relu'] is None
  with Image.open(os.path.join(workdir, 'figure1_relu_vs_tanh.png')) as image:
    assert image.size == (600, 450)


def test_figure1_end_to_end_on_mock_data(tmp_path, capsys):
  config = cifar10_relu_vs_tanh.get_config()
  config.num_epochs, config.batch_size, config.lr_grid, config.refine = 2, 16, (0.003, 0.03), False
  config.target_error, config.progress_seconds = 0.7, 0.0
  workdir = str(tmp_path / 'fig1')
  with tfds.testing.mock_data(num_examples=48):
    summary = cifar10.run(config, workdir)
    images, labels = cifar10.load_cifar10(config)
  assert 'images/s' in capsys.readouterr().out
  with Image.open(os.path.join(workdir, 'figure1_relu_vs_tanh.png')) as image:
    assert image.size == (600, 450)
  with open(os.path.join(workdir, 'figure1.json')) as f:
    written = json.load(f)
  assert written['training_error'] == summary['training_error']
  forward = jax.jit(cifar10.apply, static_argnums=2)
  # The plotted errors again, by a replay of the documented procedure with optax's own SGD
  # (biases at twice the rate, layer-params-18pct.cfg's epsB/epsW): the same init and epoch
  # order, each minibatch's mistakes counted in NumPy before its update, over 48.
  for activation in ('relu', 'tanh'):
    rate = written['learning_rate'][activation]
    assert len(written['search'][activation]['trials']) == 2
    params = cifar10.init_params(config.seed, config)
    kinds = {n: {'kernel': 'w', 'bias': 'b'} for n in params}
    tx = optax.multi_transform({'w': optax.sgd(rate, momentum=0.9), 'b': optax.sgd(2 * rate, momentum=0.9)},
                               kinds)
    opt_state = tx.init(params)
    net = cifar10.Network.from_config(config, activation)

    @jax.jit
    def step(params, opt_state, x, y, net=net, tx=tx):
      grads = jax.grad(lambda p: optax.softmax_cross_entropy_with_integer_labels(
          cifar10.apply(p, x, net), y).mean())(params)
      updates, opt_state = tx.update(grads, opt_state, params)
      return optax.apply_updates(params, updates), opt_state

    order_rng = np.random.default_rng(config.seed)
    expected = []
    for _ in written['training_error'][activation]:
      order, mistakes = order_rng.permutation(48), 0
      for s in range(3):
        idx = order[s * 16:(s + 1) * 16]
        logits = np.asarray(forward(params, images[idx], net))
        mistakes += int(np.sum(np.argmax(logits, -1) != labels[idx]))
        params, opt_state = step(params, opt_state, images[idx], labels[idx])
      expected.append(mistakes / 48)
    assert written['training_error'][activation] == pytest.approx(expected), activation
    reach = cifar10.epochs_to_reach(expected, 0.7)
    assert written['epochs_to_target'][activation] == reach
  assert images.shape == (48, 32, 32, 3) and labels.shape == (48,)
  # cuda-convnet's input: 0..255 less the mean image, so every pixel's mean is 0.
  np.testing.assert_allclose(images.mean(axis=0), 0.0, atol=1e-3)


def test_several_seeds_report_the_spread_of_epochs_to_target(tmp_path, monkeypatch, capsys):
  config = cifar10_relu_vs_tanh.get_config()
  config.num_epochs, config.lr_grid, config.refine, config.seeds = 20, (0.01, 0.1), False, (0, 1, 2)
  reach = {('relu', 0.1): 2, ('relu', 0.01): 5, ('tanh', 0.1): 9, ('tanh', 0.01): 7}
  calls = []

  def fake_epochs(config, activation, rate, images, labels, *, seed, max_epochs, trainer=None, label=''):
    del config, images, labels, max_epochs, trainer, label
    calls.append((activation, round(rate, 6), seed))
    epochs = reach[activation, round(rate, 6)] + seed  # Each seed one epoch slower.
    for epoch in range(1, 21):
      yield (0.1 if epoch >= epochs else 0.5), True

  monkeypatch.setattr(cifar10, 'train_epochs', fake_epochs)
  monkeypatch.setattr(cifar10, 'load_cifar10', lambda config: (np.zeros((4, 32, 32, 3)), np.zeros(4)))
  summary = cifar10.run(config, str(tmp_path))
  assert summary['learning_rate'] == {'relu': 0.1, 'tanh': 0.01}
  # The search ran on config.seed (0); the other seeds rerun only the chosen rates.
  assert sorted(c for c in calls if c[2] != 0) == [('relu', 0.1, 1), ('relu', 0.1, 2),
                                                  ('tanh', 0.01, 1), ('tanh', 0.01, 2)]
  assert summary['seeds'] == {'0': {'relu': 2, 'tanh': 7, 'tanh_over_relu': 3.5},
                              '1': {'relu': 3, 'tanh': 8, 'tanh_over_relu': 8 / 3},
                              '2': {'relu': 4, 'tanh': 9, 'tanh_over_relu': 9 / 4}}
  out = capsys.readouterr().out  # The winners, 0.1 and 0.01, are the grid's largest and smallest.
  assert 'relu: the best rate is at the end of lr_grid' in out
  assert 'tanh: the best rate is at the end of lr_grid' in out
  assert summary['seed_spread']['relu'] == {'reached': 3, 'runs': 3, 'min': 2, 'max': 4, 'mean': 3.0,
                                            'std': pytest.approx(math.sqrt(2 / 3))}
