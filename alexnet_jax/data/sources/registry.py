"""The source registry, the derived-file paths, and `get_source`.

Derived-file paths live here, beside the registry, because a TFDS dataset's name needs its
builder: `identity` stays below every source, and nothing imports upwards.
"""

from __future__ import annotations

import dataclasses
import json
import os

from absl import logging
import tensorflow as tf

from alexnet_jax import storage

from alexnet_jax.data.identity import DatasetIdentity
from alexnet_jax.data.sources import base, demo, folder, prepared, tfds_source
from alexnet_jax.data.spec import DataSpec

# config.data.source -> its Source class. A new source: one file, one line here.
SOURCES = {
    'imagenet2012': tfds_source.Imagenet2012,  # TFDS, manual download of the two tars.
    'imagenette': tfds_source.TfdsSource,  # TFDS, downloaded by TFDS.
    'folder': folder.FolderSource,  # <folder>/<split>/<class>/<image>.
    'demo': demo.DemoSource,  # The synthetic offline shapes of alexnet_jax.data.demo_dataset.
}


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  num_classes: int
  num_train: int
  num_eval: int
  class_names: list[str]


def source_class(spec: DataSpec) -> type[base.Source]:
  if spec.source not in SOURCES:
    raise ValueError(f'Unknown config.data.source {spec.source!r}; expected one of '
                     f'{tuple(SOURCES)}.')
  return SOURCES[spec.source]


def stats_path(spec: DataSpec) -> str:
  """`config.data.stats_file`, or <data_dir>/alexnet_jax_stats/<dataset>-<train split>.npz."""
  if spec.stats_file:
    return spec.stats_file
  return os.path.join(base.data_dir(spec), 'alexnet_jax_stats',
                      f'{source_class(spec).location_key(spec)}-{spec.train_split}.npz')


def prepared_dir(spec: DataSpec) -> str:
  """`config.data.prepared_dir`, or <data_dir>/alexnet_jax_prepared/<dataset>.

  <dataset> is `<tfds name>-<version>` or `folder-<basename>-<hash of its path>`.
  """
  if spec.prepared_dir:
    return spec.prepared_dir
  return os.path.join(base.data_dir(spec), 'alexnet_jax_prepared',
                      source_class(spec).location_key(spec))


_CACHE = {}


def get_source(spec: DataSpec, use_prepared: bool | None = None) -> base.Source:
  """The source of `spec`, reading the prepared copy of any split that has one.

  A prepared copy of other data (another folder, a folder that changed since, another
  TFDS version) or of another stored size stops the run with a one-line ValueError; it
  is never read.
  """
  if use_prepared is None:
    use_prepared = spec.use_prepared
  root = prepared_dir(spec)
  splits = (spec.train_split, spec.eval_split)
  signature = folder.FolderSource.signature(spec) if spec.source == 'folder' else ()
  infos = {s: prepared.read_info(root, s) for s in splits} if use_prepared else {}
  infos = {s: info for s, info in infos.items() if info is not None}
  # A copy written (or rewritten) since the last call is another source.
  key = (spec.source, spec.data_dir, spec.folder, spec.manual_dir, spec.skip_bad_files, splits,
         spec.stored_size, root, use_prepared, signature, json.dumps(infos, sort_keys=True))
  if key not in _CACHE:
    for s, info in infos.items():
      prepared.check_stored(info, spec.stored_size, os.path.join(root, s))
    folder_gone = spec.source == 'folder' and not (spec.folder and tf.io.gfile.isdir(spec.folder))
    if folder_gone and len(infos) == len(splits):
      # The originals were removed after `prepare`: the copy is all there is.
      fallback = None
      where = str(storage.path(spec.folder or '.'))
      for s, info in infos.items():
        made_from = DatasetIdentity.from_json(info.get('dataset'))
        if made_from is None or (made_from.split, os.path.dirname(made_from.location)) != (s, where):
          raise ValueError(
              f'The prepared copy {os.path.join(root, s)} was not made from split {s!r} of '
              f'folder {where}, which does not exist: set --config.data.folder to the images '
              'it was made from, or --config.data.prepared_dir to their prepared copy.')
      logging.info('Folder %s is gone: reading its prepared copy in %s.', spec.folder, root)
    else:
      fallback = source_class(spec).from_spec(spec)
      for s, info in infos.items():
        prepared.check_made_from(info, fallback.identity(s), os.path.join(root, s))
    _CACHE[key] = prepared.PreparedSource(
        root, infos, fallback, [s for s in splits if s not in infos]) if infos else fallback
  return _CACHE[key]


def dataset_info(spec: DataSpec) -> DatasetInfo:
  source = get_source(spec)
  return DatasetInfo(num_classes=len(source.class_names),
                     num_train=source.num_examples(spec.train_split),
                     num_eval=source.num_examples(spec.eval_split),
                     class_names=list(source.class_names))


def prepare_split(spec: DataSpec, split: str, *, store_format: str = 'jpeg',
                  jpeg_quality: int = 90, examples_per_shard: int = 1024, seed: int = 0) -> str:
  """Writes the stored-size copy of one split (the train split in an order seeded by
  `seed`) to <prepared_dir>/<split>; returns that folder."""
  out = os.path.join(prepared_dir(spec), split)
  prepared.write_split(get_source(spec, use_prepared=False), split, out,
                       size=spec.stored_size, store_format=store_format,
                       order_seed=seed if split == spec.train_split else None,
                       jpeg_quality=jpeg_quality, examples_per_shard=examples_per_shard)
  return out
