"""Sources of undecoded examples: one file per source, registered in `registry.SOURCES`."""

from alexnet_jax.data.sources.base import BadImageError, ManualDownloadError, Source
from alexnet_jax.data.sources.prepared import PreparedSource
from alexnet_jax.data.sources.registry import (SOURCES, DatasetInfo, dataset_info, get_source,
                                               prepare_split, prepared_dir, stats_path)
