"""Before a run (training or `--mode=eval`) starts: the checks that turn bad input into a
one-line ValueError before anything is written or compiled, and the dataset statistics.

Both `alexnet_jax.train` and `alexnet_jax.evaluate` run these; the device layout is
checked by `parallel.Layout`.
"""

from __future__ import annotations

import os
import tempfile

import jax
from jax.experimental import multihost_utils
import ml_collections
import numpy as np
import tensorflow as tf
from absl import logging

from alexnet_jax import input_pipeline, model, optim
from alexnet_jax.data import spec as data_spec

VIEWS = data_spec.VIEWS  # Sec. 4.1's view schemes: the centre crop, and the 10 views.


def check_config(config: ml_collections.ConfigDict) -> model.Spec:
  """One-line ValueErrors for settings that cannot work, before anything is written."""
  spec = model.Spec.from_config(config.model)
  optim.validate(config.optim)
  for field in ('batch_size', 'eval_batch_size', 'num_epochs', 'log_every_steps',
                'checkpoint_every_steps', 'keep_checkpoints', 'eval_every_epochs'):
    if config[field] < 1:
      raise ValueError(f'config.{field} must be a positive integer, got {config[field]}.')
  data_spec.DataSpec.from_config(config.data)  # Every config.data choice, checked once.
  unknown = set(config.eval_views) - set(VIEWS)
  if unknown:
    raise ValueError(f'config.eval_views may hold {VIEWS}, got {tuple(config.eval_views)}.')
  if config.max_steps == 0 or config.max_steps < -1:
    raise ValueError(f'config.max_steps must be a positive number of steps, or -1 for '
                     f'config.num_epochs worth; got {config.max_steps}.')
  return spec


def check_workdir(workdir: str) -> None:
  """That `workdir` can be written, creating nothing: a run that fails a later check
  leaves no empty directory behind (`create_workdir` makes it)."""
  path = os.path.abspath(workdir)
  existing = path
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  try:
    if not os.path.isdir(existing):
      raise NotADirectoryError(20, f'{existing} is not a directory')
    with tempfile.NamedTemporaryFile(dir=existing):
      pass
  except OSError as e:
    raise ValueError(f'cannot write to workdir {workdir!r} ({e.strerror}): choose another '
                     '--workdir.') from None


def create_workdir(workdir: str) -> None:
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    raise ValueError(f'cannot create workdir {workdir!r} ({e.strerror}): choose another '
                     '--workdir.') from None


def check_dataset(config, spec: model.Spec, *, training: bool = True) -> input_pipeline.DatasetInfo:
  """The dataset against the model, and (training) against the batch size."""
  info = input_pipeline.dataset_info(config.data)
  if info.num_classes != spec.num_classes:
    raise ValueError(f'The dataset has {info.num_classes} classes but config.model.num_classes '
                     f'is {spec.num_classes}: set --config.model.num_classes={info.num_classes}.')
  if training and config.batch_size > info.num_train:
    raise ValueError(f'config.batch_size {config.batch_size} is larger than the training split '
                     f'({info.num_train} images in {config.data.source} '
                     f'{config.data.train_split!r}): set --config.batch_size to at most '
                     f'{info.num_train}.')
  return info


def check_statistics_file(data_cfg) -> None:
  """A statistics file that exists but cannot be read (a truncated copy) is named in one
  line, rather than failing inside np.load with a zipfile error naming no file."""
  if data_cfg.statistics != 'train_split':
    return
  path = input_pipeline.stats_path(data_cfg)
  if not tf.io.gfile.exists(path):
    return
  try:
    with tf.io.gfile.GFile(path, 'rb') as f, np.load(f) as z:
      for name in z.files:
        z[name]  # pylint: disable=pointless-statement  (reads and decompresses each array)
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f'the dataset statistics file {path} is damaged ({type(e).__name__}: '
                     f'{" ".join(str(e).split())[:120]}): delete it to compute it again, or set '
                     '--config.data.stats_file to a good copy.') from None


def ensure_statistics(data_cfg) -> None:
  """Sec. 2's mean image (and Sec. 4.1's PCA) of this training split, before training.

  Process 0 computes them if the file is missing (one streaming pass with a progress
  line); the other processes wait for it and then read the same file. On a data_dir that
  is not shared, a process that still finds no file computes the same statistics itself.
  """
  if data_cfg.statistics == 'imagenet':
    logging.info('config.data.statistics=imagenet: subtracting the ImageNet per-channel '
                 'mean, not this training split\'s mean image.')
    return
  check_statistics_file(data_cfg)
  if jax.process_index() == 0:
    input_pipeline.load_stats(data_cfg)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices('alexnet_jax: dataset statistics')
  input_pipeline.load_stats(data_cfg)
