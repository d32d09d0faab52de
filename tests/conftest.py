import importlib.util
import os
import pathlib
import sys

# The compile-only backends of `python -m alexnet_jax.aot` (the CUDA PJRT plugin, ptxas,
# libtpu: alexnet_jax/aot/targets.py, COMPILERS) live in a folder of their own, installed by
# `python -m alexnet_jax.aot --install_compilers`. It goes on this process's sys.path
# before jax is first imported (jax looks for the plugins and ptxas at import), so that the
# GPU and TPU tests compile in-process; and not on PYTHONPATH, so that the commands the tests
# start (`python -m alexnet_jax.main`, ...) run in the environment users have, without them.
# targets.py is read on its own: importing the package would import jax first.
_spec = importlib.util.spec_from_file_location(
    '_alexnet_jax_targets',
    pathlib.Path(__file__).resolve().parent.parent / 'alexnet_jax' / 'aot' / 'targets.py')
_targets = sys.modules[_spec.name] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_targets)
if _targets.compilers_problem() is None:
  sys.path.insert(0, _targets.compilers_dir())

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=4')
# The suite runs on the CPU: with the compilers' folder on the path, JAX would otherwise also
# start the CUDA plugin (and print why it finds no GPU); compile-only devices need no backend.
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
# Compiling dominates the suite, and its tests compile the same small programs again and again
# (a tiny run's train and eval steps, in this process and in the `python -m alexnet_jax...`
# subprocesses, which inherit this variable): JAX's persistent compilation cache compiles
# each once. The programs run are the same; a fresh directory per session, removed at exit,
# so nothing carries over from one run of the suite to the next. It halves the suite's time.
import atexit  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
  os.environ['JAX_COMPILATION_CACHE_DIR'] = tempfile.mkdtemp(prefix='alexnet_jax_tests_xla_')
  atexit.register(shutil.rmtree, os.environ['JAX_COMPILATION_CACHE_DIR'], ignore_errors=True)
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0.2')

# CPython 3.11.7 can fail an import with "SystemError: AST constructor recursion depth
# mismatch" when a module is first imported while other threads run (tf.data, orbax and
# TensorBoard writers of earlier tests). So the modules that tests and libraries would
# otherwise import lazily mid-suite are imported here, once, before any test starts a thread.
# pylint: disable=g-import-not-at-top,unused-import,wrong-import-position
import encodings.cp437  # noqa: E402,F401  zipfile's file name decoder (np.load of .npz files).
import importlib  # noqa: E402
import pkgutil  # noqa: E402

import jax  # noqa: E402
from ml_collections import config_flags  # noqa: E402,F401
from PIL import Image  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402
import tensorflow_datasets.testing  # noqa: E402,F401
try:  # The reference of the converter and switch tests (the test extra installs it).
  import torch  # noqa: E402,F401
except ImportError:
  pass
from tensorflow.python.data import ops as tf_data_ops  # noqa: E402
for _plugin in ('jax_plugins.xla_cuda12', 'libtpu'):  # The compilers' folder's, where installed.
  try:
    importlib.import_module(_plugin)
  except ImportError:
    pass
# Importing libtpu (jax does at import, where it finds it) sets TPU_LIBRARY_PATH to its
# libtpu.so in this process's environment, which the commands the tests start inherit: they
# would load it as a run-time backend (and print libtpu's warnings). jax finds it here
# through the module.
if os.path.realpath(os.environ.get('TPU_LIBRARY_PATH', '/')).startswith(
    os.path.realpath(_targets.compilers_dir()) + os.sep):
  del os.environ['TPU_LIBRARY_PATH']

# The run-directory lock's GCS client and the remote tests' TLS certificates (object_store).
from google.api_core import exceptions as _gcs_exceptions  # noqa: E402,F401
from google.cloud import storage as _gcs  # noqa: E402,F401
import trustme  # noqa: E402,F401

from alexnet_jax import evaluate, metrics, train  # noqa: E402,F401
# Imported lazily elsewhere: the checkpoints, the data commands, the readers of runs.
from alexnet_jax.analysis import figures, report  # noqa: E402,F401
from alexnet_jax.aot import programs  # noqa: E402,F401
from alexnet_jax.data import demo_dataset, pipeline, prepare, statistics  # noqa: E402,F401
from alexnet_jax.experiments import cifar10  # noqa: E402,F401
from alexnet_jax.rundir import checkpoints  # noqa: E402,F401
from configs import default as _configs_default  # noqa: E402,F401  The tests' configs/ files.

_ = tfds.testing.mock_data  # tfds.testing resolves its submodules on first use.
with tempfile.TemporaryDirectory() as _tmp:  # A first scalar imports TensorBoard and fsspec.
  _writer = tf.summary.create_file_writer(_tmp)
  with _writer.as_default(step=0):
    tf.summary.scalar('x', 0.0)
  _writer.close()
tfds.builder_cls('cifar10')  # The first name lookup imports every dataset module of TFDS.
Image.init()  # PIL's format plugins, otherwise loaded by the first image opened.
for _module in pkgutil.iter_modules(tf_data_ops.__path__):  # tf.data loads each op on first use.
  importlib.import_module(f'{tf_data_ops.__name__}.{_module.name}')
jax.jit(lambda x: x + 1)(1.0)  # The first lowering loads jaxlib's MLIR dialects.


# ------------------------------------------------------------------------ shared fixtures
import ml_collections  # noqa: E402
import pytest  # noqa: E402


def _small_model_config(**overrides) -> ml_collections.ConfigDict:
  """The paper's network with narrow layers: same structure and 224 input, fast to run."""
  import alexnet_jax as _alexnet_jax  # pylint: disable=g-import-not-at-top
  cfg = _alexnet_jax.model_config()
  cfg.conv_features = (8, 16, 24, 24, 16)
  cfg.fc_features = (32, 32)
  cfg.num_classes = 10
  for k, v in overrides.items():
    setattr(cfg, k, v)
  return cfg


@pytest.fixture
def small_model_config():
  """A factory: small_model_config(**overrides) -> a narrow model config."""
  return _small_model_config


def _write_dark_and_bright(root, per_class: dict) -> str:
  """Two classes a network tells apart at once: dark and bright noisy 256x256 images,
  `per_class[split]` of each, as root/<split>/<class>/<i>.png."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  for split, count in per_class.items():
    for name, level in (('dark', 50), ('bright', 200)):
      os.makedirs(root / split / name)
      for i in range(count):
        pixels = np.clip(rng.normal(level, 25, size=(256, 256, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(root / split / name / f'{i}.png')
  return str(root)


@pytest.fixture(scope='session')
def write_dark_and_bright():
  """A helper: write_dark_and_bright(root, {'train': n, ...}) writes the image folder."""
  return _write_dark_and_bright


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
  """A dark/bright image folder (12 train, 7 val images per class), one per test module."""
  return _write_dark_and_bright(tmp_path_factory.mktemp('folder'), {'train': 12, 'val': 7})


def _tiny_config(folder, **overrides) -> ml_collections.ConfigDict:
  """configs/default.py's run on `folder` with a narrow network: 6 steps per epoch, 2
  epochs. `overrides` are dotted fields, e.g. **{'optim.learning_rate': 0.1}."""
  config = _configs_default.get_config()
  config.data.source = 'folder'
  config.data.folder = folder
  config.data.shuffle_buffer = 64
  config.model.num_classes = 2
  config.model.conv_features = (8, 16, 24, 24, 16)
  config.model.fc_features = (256, 256)  # Wide enough that dropout noise averages out.
  config.model.init = 'he'  # Learns from the first steps (see model_config).
  config.optim.learning_rate = 0.001
  config.batch_size = 4
  config.eval_batch_size = 4
  config.num_epochs = 2  # 24 images / 4 = 6 steps per epoch.
  config.log_every_steps = 6  # Losses are means over 6 steps of 4 noisy images.
  config.checkpoint_every_steps = 4
  config.eval_views = ('center', 'ten')
  config.mesh.data = 1
  config.mesh.model = 1
  config.update_from_flattened_dict(overrides)  # Dotted names: {'model.init': 'he'}.
  return config


def _flat(config, prefix=''):
  flat = {}
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      flat.update(_flat(value, f'{prefix}{key}.'))
    else:
      flat[prefix + key] = value
  return flat


def _config_file(path, config) -> str:
  """A --config file giving `config`: configs/default.py plus the fields that differ."""
  base = _flat(_configs_default.get_config())
  diff = {k: v for k, v in _flat(config).items() if base.get(k) != v}
  path.write_text('from configs import default\n\n\ndef get_config():\n'
                  '  config = default.get_config()\n'
                  f'  config.update_from_flattened_dict({diff!r})\n  return config\n')
  return str(path)


@pytest.fixture(scope='session')
def config_file():
  """A helper: config_file(path, config) writes a --config file that gives `config`."""
  return _config_file


@pytest.fixture(scope='session')
def tiny_config():
  """A factory: tiny_config(folder, **dotted_overrides) -> a config training in seconds."""
  return _tiny_config


@pytest.fixture(scope='session')
def make_mesh():
  """A factory: make_mesh(data, model) -> a ('data', 'model') mesh on the first
  data * model of the fake devices."""
  from alexnet_jax import parallel  # pylint: disable=g-import-not-at-top

  def make(data: int, model_size: int):
    return parallel.make_mesh(data, model_size, devices=jax.devices()[:data * model_size])

  return make


@pytest.fixture(scope='module')
def case():
  """(small model config, params, images [4, 224, 224, 3], labels [4]) for the layout and
  mapper tests; the weights are scaled by 4 so that every layer matters to the output."""
  import alexnet_jax as _alexnet_jax  # pylint: disable=g-import-not-at-top
  cfg = _small_model_config()
  params = _alexnet_jax.init_params(jax.random.key(0), cfg)
  params = jax.tree.map(lambda p: p * 4.0, params)
  images = jax.random.normal(jax.random.key(1), (4, 224, 224, 3)) * 60.0
  labels = jax.numpy.array([0, 3, 7, 9])
  return cfg, params, images, labels


def _train(config, workdir: str) -> dict:
  """train.train_and_evaluate of a ConfigDict, parsed as the command parses it (RunSpec)."""
  from alexnet_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  return train.train_and_evaluate(config_lib.RunSpec.from_config(config), workdir)


@pytest.fixture(scope='session')
def train_config():
  """A helper: train_config(config, workdir) -> the summary of training `config` (a
  ConfigDict: RunSpec.from_config, then train.train_and_evaluate) in `workdir`."""
  return _train


@pytest.fixture(scope='session')
def tiny_run(tmp_path_factory):
  """(config, workdir) of a tiny run on its own dark/bright folder, trained once per session
  (1 epoch, centre view) for the tests that only read a run: the notebook, the README."""
  folder = _write_dark_and_bright(tmp_path_factory.mktemp('tiny_run_folder'), {'train': 12, 'val': 7})
  workdir = str(tmp_path_factory.mktemp('tiny_run'))
  config = _tiny_config(folder, num_epochs=1, eval_views=('center',))
  _train(config, workdir)
  return config, workdir


@pytest.fixture(scope='session')
def object_store(tmp_path_factory):
  """A GCS-compatible server on 127.0.0.1 (tests/object_store.py), one per session; its
  `env` points every client (TensorFlow, tensorstore, google-cloud-storage) at it."""
  from tests import object_store as store_lib  # pylint: disable=g-import-not-at-top
  store = store_lib.ObjectStore(tmp_path_factory.mktemp('object_store') / 'store')
  yield store
  store.close()


@pytest.fixture
def on_object_store(object_store, monkeypatch):
  """This test process's clients pointed at the object store (its env set)."""
  for key, value in object_store.env.items():
    monkeypatch.setenv(key, value)
  return object_store
