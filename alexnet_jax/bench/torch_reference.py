"""The same two-column network and SGD step in PyTorch eager, as a speed yardstick.

Only `python -m alexnet_jax.bench --torch` imports this module (torch is optional and
never part of the tests). The layer shapes are those of alexnet_jax.model: two columns,
conv1 padded (0, 3) to give 55x55, LRN within each column with the paper's formula,
3/2 max-pooling, conv3 and the fc layers reading both columns, dropout 0.5, and SGD
with momentum 0.9 and weight decay 5e-4 (Sec. 5). Two formulations of that computation:

  'grouped'        the fastest PyTorch form: one convolution where both columns read the
                   same input (conv1, conv3), groups=2 where each column reads only its
                   own (conv2, conv4, conv5), one matmul per fully connected layer (each
                   reads both columns), LRN within each column as one call.
  'split_columns'  every layer split into per-column modules, as the JAX code is written.
"""

from __future__ import annotations

import statistics
import time

try:
  import torch
  from torch import nn
except ImportError as e:  # pragma: no cover - depends on the environment.
  raise ImportError('--torch needs PyTorch: pip install torch') from e

from alexnet_jax import model

FORMULATIONS = ('grouped', 'split_columns')


def _lrn(spec):
  # nn.LocalResponseNorm computes alpha / n * sum: pass n times what multiplies the sum
  # (model.lrn_alpha, or alpha / n with model.lrn_alpha_over_n).
  return nn.LocalResponseNorm(spec.lrn_n, alpha=spec.lrn_scale * spec.lrn_n, beta=spec.lrn_beta,
                              k=spec.lrn_k)


class ColumnLRN(nn.Module):
  """LRN within each column's channels: [N, 2C, H, W] viewed as [2N, C, H, W]."""

  def __init__(self, spec):
    super().__init__()
    self.lrn = _lrn(spec)

  def forward(self, x):
    n, c, h, w = x.shape
    return self.lrn(x.reshape(2 * n, c // 2, h, w)).reshape(n, c, h, w)


class GroupedAlexNet(nn.Module):
  """The two-column network with grouped convolutions and whole-layer matmuls."""

  def __init__(self, spec: model.Spec):
    super().__init__()
    w1, w2, w3, w4, w5 = spec.conv_widths
    f6, f7 = spec.fc_widths
    pad_after = model.conv1_padding(spec.image_size)[1]
    pool = lambda: nn.MaxPool2d(spec.pool_window, spec.pool_stride)
    self.features = nn.Sequential(
        nn.ZeroPad2d((0, pad_after, 0, pad_after)),
        nn.Conv2d(3, 2 * w1, 11, stride=4), nn.ReLU(), ColumnLRN(spec), pool(),
        nn.Conv2d(2 * w1, 2 * w2, 5, padding=2, groups=2), nn.ReLU(), ColumnLRN(spec), pool(),
        nn.Conv2d(2 * w2, 2 * w3, 3, padding=1), nn.ReLU(),
        nn.Conv2d(2 * w3, 2 * w4, 3, padding=1, groups=2), nn.ReLU(),
        nn.Conv2d(2 * w4, 2 * w5, 3, padding=1, groups=2), nn.ReLU(), pool())
    self.classifier = nn.Sequential(
        nn.Linear(6 * 6 * 2 * w5, 2 * f6), nn.ReLU(), nn.Dropout(spec.dropout_rate),
        nn.Linear(2 * f6, 2 * f7), nn.ReLU(), nn.Dropout(spec.dropout_rate),
        nn.Linear(2 * f7, spec.num_classes))

  def forward(self, x):
    return self.classifier(self.features(x).flatten(1))


class TwoColumnAlexNet(nn.Module):
  """The two-column network with every layer split into per-column modules."""

  def __init__(self, spec: model.Spec):
    super().__init__()
    w1, w2, w3, w4, w5 = spec.conv_widths
    f6, f7 = spec.fc_widths
    pad_after = model.conv1_padding(spec.image_size)[1]
    lrn = lambda: _lrn(spec)
    pool = lambda: nn.MaxPool2d(spec.pool_window, spec.pool_stride)
    self.pad1 = nn.ZeroPad2d((0, pad_after, 0, pad_after))  # (left, right, top, bottom).
    self.lower = nn.ModuleList([
        nn.Sequential(nn.Conv2d(3, w1, 11, stride=4), nn.ReLU(), lrn(), pool(),
                      nn.Conv2d(w1, w2, 5, padding=2), nn.ReLU(), lrn(), pool())
        for _ in range(2)])
    self.upper = nn.ModuleList([
        nn.Sequential(nn.Conv2d(2 * w2, w3, 3, padding=1), nn.ReLU(),
                      nn.Conv2d(w3, w4, 3, padding=1), nn.ReLU(),
                      nn.Conv2d(w4, w5, 3, padding=1), nn.ReLU(), pool())
        for _ in range(2)])
    self.fc6 = nn.ModuleList([nn.Linear(6 * 6 * 2 * w5, f6) for _ in range(2)])
    self.fc7 = nn.ModuleList([nn.Linear(2 * f6, f7) for _ in range(2)])
    self.fc8 = nn.Linear(2 * f7, spec.num_classes)
    self.dropout = nn.Dropout(spec.dropout_rate)

  def forward(self, x):
    x = self.pad1(x)
    x = torch.cat([column(x) for column in self.lower], dim=1)
    x = torch.cat([column(x) for column in self.upper], dim=1).flatten(1)
    x = torch.cat([self.dropout(torch.relu(fc(x))) for fc in self.fc6], dim=1)
    x = torch.cat([self.dropout(torch.relu(fc(x))) for fc in self.fc7], dim=1)
    return self.fc8(x)


def run(run_spec, *, batch_size: int, steps: int, warmup: int = 2,
        formulation: str = 'grouped') -> dict:
  """Median time of `steps` SGD steps (after `warmup`) on random NCHW input, on CPU, of
  `run_spec`'s network (a parsed config, `config.RunSpec`)."""
  spec = run_spec.model
  if spec.columns != 2:
    raise ValueError('The PyTorch reference is the two-column network only.')
  torch.manual_seed(0)
  net = {'grouped': GroupedAlexNet, 'split_columns': TwoColumnAlexNet}[formulation](spec)
  with torch.no_grad():
    for p in net.parameters():
      p.normal_(0.0, spec.init_std)
  net.train()
  opt = torch.optim.SGD(net.parameters(), lr=run_spec.optim.learning_rate,
                        momentum=run_spec.optim.momentum, weight_decay=run_spec.optim.weight_decay)
  images = 60.0 * torch.randn(batch_size, 3, spec.image_size, spec.image_size)
  labels = torch.randint(0, spec.num_classes, (batch_size,))
  loss_fn = nn.CrossEntropyLoss()

  def step():
    opt.zero_grad(set_to_none=True)
    loss = loss_fn(net(images), labels)
    loss.backward()
    opt.step()
    return loss

  for _ in range(warmup):
    step()
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    step()
    times.append(time.perf_counter() - start)
  median = statistics.median(times)
  return {
      'formulation': formulation,
      'torch_version': torch.__version__,
      'torch_threads': torch.get_num_threads(),
      'batch_size': batch_size,
      'steps': steps,
      'step_median_s': median,
      'step_min_s': min(times),
      'step_max_s': max(times),
      'step_times_s': times,
      'images_per_s': batch_size / median,
  }
