"""`DatasetIdentity`: which data a derived file (statistics, prepared copy) was made from.

Derived-file *paths* are not here: a TFDS dataset's name needs its builder, so they are
computed beside the source registry (`sources.stats_path`, `sources.prepared_dir`).
"""

from __future__ import annotations

import dataclasses
import json


@dataclasses.dataclass(frozen=True)
class DatasetIdentity:
  """A TFDS dataset is its builder's full name (name/config/version) and split. A folder is
  the split folder's absolute path plus a fingerprint of its image files (relative paths
  and sizes): a folder that gains, loses or changes files is another dataset.
  """
  source: str
  location: str  # TFDS full name, or the folder's absolute path.
  split: str
  fingerprint: str = ''  # Folder only.
  num_files: int = 0  # Folder only: for messages.

  def describe(self) -> str:
    if self.source != 'folder':
      return f'{self.location} split {self.split!r}'
    return f'folder {self.location} split {self.split!r} ({self.num_files} files)'

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self), sort_keys=True)

  @classmethod
  def from_json(cls, text: str | None) -> 'DatasetIdentity | None':
    try:
      return cls(**json.loads(text))
    except (TypeError, ValueError):  # Written before identities were recorded.
      return None
