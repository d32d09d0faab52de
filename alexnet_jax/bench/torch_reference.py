"""The same two-column network and SGD step in PyTorch eager, as a speed yardstick.

Only `python -m alexnet_jax.bench --torch` imports this module (torch is optional and
never part of the tests). The layer shapes are those of alexnet_jax.model: two columns,
conv1 padded (0, 3) to give 55x55, LRN within each column with the paper's formula,
3/2 max-pooling, conv3 and the fc layers reading both columns, dropout 0.5, and SGD
with momentum 0.9 and weight decay 5e-4 (Sec. 5).
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


class TwoColumnAlexNet(nn.Module):

  def __init__(self, spec: model.Spec):
    super().__init__()
    if spec.columns != 2:
      raise ValueError('The PyTorch reference is the two-column network only.')
    w1, w2, w3, w4, w5 = spec.conv_widths
    f6, f7 = spec.fc_widths
    pad_after = model.conv1_padding(spec.image_size)[1]
    # nn.LocalResponseNorm computes alpha / n * sum: pass n times what multiplies the sum
    # (model.lrn_alpha, or alpha / n with model.lrn_alpha_over_n).
    lrn = lambda: nn.LocalResponseNorm(spec.lrn_n, alpha=spec.lrn_scale * spec.lrn_n,
                                       beta=spec.lrn_beta, k=spec.lrn_k)
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


def run(config, *, batch_size: int, steps: int, warmup: int = 2) -> dict:
  """Median time of `steps` SGD steps (after `warmup`) on random NCHW input, on CPU."""
  spec = model.Spec.from_config(config.model)
  torch.manual_seed(0)
  net = TwoColumnAlexNet(spec)
  with torch.no_grad():
    for p in net.parameters():
      p.normal_(0.0, spec.init_std)
  net.train()
  opt = torch.optim.SGD(net.parameters(), lr=config.optim.learning_rate,
                        momentum=config.optim.momentum, weight_decay=config.optim.weight_decay)
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
