"""Before a run (training or `--mode=eval`) starts: the checks that turn bad input into a
one-line ValueError before anything is written or compiled, and the dataset statistics.

Both `alexnet_jax.train` and `alexnet_jax.evaluate` run these; the device layout is
checked by `parallel.Layout`.
"""

from __future__ import annotations

import ml_collections
import numpy as np
import tensorflow as tf
from absl import logging

from alexnet_jax import distributed, input_pipeline, model, optim, storage
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
  """That `workdir` can be written, creating nothing that stays: a run that fails a later
  check leaves no empty directory behind (`create_workdir` makes it). On an object store:
  the bucket exists and these credentials may write there."""
  storage.check_writable(workdir, 'workdir', 'choose another --workdir')


def create_workdir(workdir: str) -> None:
  try:
    storage.path(workdir).mkdir(parents=True, exist_ok=True)
  except Exception as e:  # pylint: disable=broad-except  (OSError, or the store's answer)
    raise ValueError(f'cannot create workdir {workdir!r} ({storage.one_line(e)}): choose another '
                     '--workdir.') from None


def check_data_paths(data_cfg) -> None:
  """A one-line error naming any data path on a store that cannot be read (a scheme
  TensorFlow has no filesystem for, a missing bucket, no credentials), before any read."""
  for field in ('data_dir', 'manual_dir', 'folder', 'prepared_dir', 'stats_file'):
    value = data_cfg.get(field)
    if value:
      storage.check_readable(value, f'config.data.{field}',
                             f'set --config.data.{field} to a local path or a gs:// one you can '
                             'read')


def build_dataset(data_cfg) -> None:
  """One build per run: process 0 builds the dataset where its source needs one (TFDS
  downloads or generates it on first use); the others wait for it, then read the same
  build. A failed build (a missing manual download) is process 0's one line; the other
  processes stop with a line that points to it."""
  distributed.on_process_0(f'build the dataset {data_cfg.source!r}',
                           lambda: input_pipeline.get_source(data_cfg).prepare())


def check_dataset(config, spec: model.Spec, *, training: bool = True) -> input_pipeline.DatasetInfo:
  """The dataset (built once, by process 0) against the model, and (training) against the
  batch size."""
  check_data_paths(config.data)
  build_dataset(config.data)
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
  distributed.on_process_0('compute the dataset statistics',
                           lambda: input_pipeline.load_stats(data_cfg))
  input_pipeline.load_stats(data_cfg)
