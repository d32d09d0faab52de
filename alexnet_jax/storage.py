"""User paths, local or on an object store: one path type for both.

Every path a user gives (the workdir, the data, a prepared copy, a figure's output) may be a
local path or a URI such as `gs://bucket/runs/paper`. They are `etils.epath.Path`s, the path
type orbax uses: a local path goes to the OS, a `gs://` one through TensorFlow's GCS
filesystem (the one TFDS, tf.data and TensorBoard read and write with), and orbax's arrays
through tensorstore. `pathlib.Path('gs://b/x').absolute()` would be `<cwd>/gs:/b/x`: nothing
here turns a URI into a local path.

Object stores differ from a disk in three ways that matter to a run directory:
- no rename of a directory, and no atomic rename of a file: a file is made whole by
  writing it in one request (an upload replaces an object whole, or not at all), so
  `write_whole` renames a temporary only on a local disk, and `move_tree` copies;
- no free space to check before a save, and no `flock` (rundir's lock leases an object);
- their errors are HTTP answers (403 no permission, 404 no bucket), which `one_line` turns
  into the sentence they carry.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile

from etils import epath


class WriteError(RuntimeError):
  """A run's file could not be written (a full disk, a store refusing writes): one line,
  and what was written before is kept."""


@contextlib.contextmanager
def writing(target: str | os.PathLike):
  """Turns any error of the `with` block into a one-line WriteError naming `target`."""
  try:
    yield
  except WriteError:
    raise
  except Exception as e:  # pylint: disable=broad-except  (OSError, TensorFlow's, the store's)
    fix = ("check the credentials' permissions and the bucket's quota" if is_remote(target)
           else 'make room or fix its permissions')
    raise WriteError(f'cannot write {os.fspath(target)} ({one_line(e)}): {fix}. What was saved '
                     'before is kept; the same command resumes from the last checkpoint.') from e


def is_remote(path: str | os.PathLike) -> bool:
  """Whether `path` is a URI (gs://, s3://, ...) rather than a local path."""
  return '://' in os.fspath(path)


def path(p: str | os.PathLike) -> epath.Path:
  """`p` as a Path: a URI as it is; a local path with `~` expanded, made absolute."""
  if is_remote(p):
    return epath.Path(os.fspath(p))
  return epath.Path(os.path.abspath(os.path.expanduser(os.fspath(p))))


def bucket(p: str | os.PathLike) -> str:
  """The `scheme://bucket` of a URI."""
  scheme, rest = os.fspath(p).split('://', 1)
  return f'{scheme}://{rest.split("/", 1)[0]}'


def one_line(error: BaseException, limit: int = 200) -> str:
  """An error as one short line; for an object store's HTTP answer, the message it carries
  (`... HTTP response code 403 with body '{"error": {"message": ...}}'`)."""
  text = str(getattr(error, 'message', '') or error)
  status = re.search(r'response code (\d+)', text)
  body = re.search(r"with body '(.*?)'(?:\s|$)", text, re.S)
  if body:
    try:
      message = json.loads(body.group(1))['error']['message']
      text = f'HTTP {status.group(1)}: {message}' if status else message
    except (ValueError, KeyError, TypeError):
      pass
  text = ' '.join(text.split())
  return text if len(text) <= limit else text[:limit - 3] + '...'


def write_whole(target: str | os.PathLike, data: str | bytes) -> None:
  """Writes `data` to `target` so that a reader never sees part of it: on a local disk a
  temporary beside it, renamed over it; on an object store one upload (which replaces the
  object whole or not at all; a store has no atomic rename)."""
  target = path(target)
  mode = 'wb' if isinstance(data, bytes) else 'w'
  if is_remote(target):
    with target.open(mode) as f:
      f.write(data)
    return
  # A name of this process's own (open() keeps the umask's permissions, unlike mkstemp).
  tmp = os.path.join(os.fspath(target.parent), f'.{target.name}.tmp-{os.getpid()}')
  try:
    with open(tmp, mode) as f:
      f.write(data)
    os.replace(tmp, os.fspath(target))
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def move_tree(source: str | os.PathLike, dest: str | os.PathLike) -> None:
  """Moves the directory `source` to `dest` (whose parent it creates): one rename on a local
  disk; on an object store, each file copied (server-side), then the source removed."""
  source, dest = path(source), path(dest)
  dest.parent.mkdir(parents=True, exist_ok=True)
  if not is_remote(source):
    os.replace(os.fspath(source), os.fspath(dest))
    return
  for directory, _, files in source.walk():
    target = dest / directory.relative_to(source)
    target.mkdir(parents=True, exist_ok=True)
    for name in files:
      (directory / name).copy(target / name, overwrite=True)
  source.rmtree()


def size(p: str | os.PathLike) -> int:
  """The bytes of the files under `p` (a file or a directory)."""
  p = path(p)
  if not p.is_dir():
    return p.stat().length
  return sum((d / name).stat().length for d, _, files in p.walk() for name in files)


def check_writable(directory: str | os.PathLike, what: str, change: str) -> None:
  """A one-line ValueError if `directory` cannot be written, creating nothing that stays.

  Local: a temporary file in the nearest directory that exists. Object store: the bucket
  must exist and a probe object under `directory` be written and removed, so that a missing
  bucket, missing credentials or a missing permission stop a run before it starts.
  what: e.g. 'workdir'; change: what to do instead, e.g. 'choose another --workdir'.
  """
  if not is_remote(directory):
    existing = os.path.abspath(os.path.expanduser(os.fspath(directory)))
    while not os.path.exists(existing):
      existing = os.path.dirname(existing)
    try:
      if not os.path.isdir(existing):
        raise NotADirectoryError(20, f'{existing} is not a directory')
      with tempfile.NamedTemporaryFile(dir=existing):
        pass
    except OSError as e:
      raise ValueError(f'cannot write to {what} {os.fspath(directory)!r} ({e.strerror}): '
                       f'{change}.') from None
    return
  root = bucket(directory)
  try:
    found = path(root).exists()
  except Exception as e:  # pylint: disable=broad-except  (TensorFlow's errors name no class we share)
    raise ValueError(f'cannot reach {what} {os.fspath(directory)} ({one_line(e)}): check the '
                     f'credentials (gcloud auth application-default login) and the bucket, or '
                     f'{change}.') from None
  if not found:
    raise ValueError(f'the bucket of {what} {os.fspath(directory)} does not exist, or these '
                     f'credentials cannot see it: create {root} (gcloud storage buckets create '
                     f'{root}), or {change}.')
  probe = path(directory) / f'.alexnet_jax-write-check-{os.getpid()}'
  try:
    probe.write_text('written by alexnet_jax to check that this run can write here\n')
    probe.unlink()
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f'cannot write to {what} {os.fspath(directory)} ({one_line(e)}): check '
                     f'the credentials and their permissions on {root}, or {change}.') from None


def check_readable(directory: str | os.PathLike, what: str, change: str) -> None:
  """A one-line ValueError naming `directory` if its store cannot be read at all (a scheme
  TensorFlow has no filesystem for, a bucket that does not exist, no credentials). A
  directory that does not exist yet is fine: it is made when written."""
  if not is_remote(directory):
    return
  try:
    found = path(bucket(directory)).exists()
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f'cannot read {what} {os.fspath(directory)} ({one_line(e)}): {change}.'
                     ) from None
  if not found:
    raise ValueError(f'cannot read {what} {os.fspath(directory)}: its bucket does not exist, '
                     f'or these credentials cannot see it; {change}.')
