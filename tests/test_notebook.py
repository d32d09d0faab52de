"""notebooks/inspect.ipynb runs top to bottom, and its saved outputs come from the current code.

The notebook is executed once (nbclient, a fresh kernel) in its fast mode on a tiny run
trained here with its workdir on the test object store (gs://, tests/object_store.py), so it
reads the run as a pod's notebook would. Cells tagged `deterministic` do not depend on the run
(the paper's network, its layer table, the columns' exchange, dropout masks of a fixed key):
their text outputs must equal the ones saved in the notebook. Its cells up to the columns'
exchange also run where the default backend has one device (a one-GPU host, simulated).
"""

import os
import pathlib
import subprocess
import sys

import nbclient  # The test extra installs nbclient, nbformat and ipykernel.
import nbformat
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / 'notebooks' / 'inspect.ipynb'


def _text(cell) -> str:
  """A cell's text outputs (streams and plain-text results), figures left out, each line's
  trailing spaces stripped; TensorFlow's C++ log lines on stderr are not the cell's output."""
  parts = []
  for out in cell.get('outputs', []):
    if out['output_type'] == 'stream' and out['name'] == 'stdout':
      parts.append(out['text'])
    elif out['output_type'] == 'execute_result':
      parts.append(out['data'].get('text/plain', ''))
  return '\n'.join(line.rstrip() for line in ''.join(parts).splitlines())


@pytest.fixture(scope='module')
def executed(object_store, tmp_path_factory, write_dark_and_bright, tiny_config):
  from alexnet_jax import config as config_lib, train  # pylint: disable=g-import-not-at-top
  notebook = nbformat.read(NOTEBOOK, as_version=4)
  saved = nbformat.read(NOTEBOOK, as_version=4)
  workdir = f"{object_store.make_bucket('alexnet-jax-notebook')}/tiny_run"
  env = {**object_store.env, 'ALEXNET_NOTEBOOK_WORKDIR': workdir, 'ALEXNET_NOTEBOOK_FAST': '1',
         # The kernel imports this checkout's package, whatever is installed.
         'PYTHONPATH': os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get('PYTHONPATH')] if p])}
  old = {k: os.environ.get(k) for k in env}
  os.environ.update(env)
  try:
    images = write_dark_and_bright(tmp_path_factory.mktemp('notebook_images'), {'train': 12, 'val': 7})
    config = tiny_config(images, num_epochs=1, eval_views=('center',))
    train.train_and_evaluate(config_lib.RunSpec.from_config(config), workdir)
    nbclient.NotebookClient(notebook, timeout=600, kernel_name='python3', allow_errors=True,
                            resources={'metadata': {'path': str(ROOT)}}).execute()
  finally:
    for k, v in old.items():
      if v is None:
        os.environ.pop(k, None)
      else:
        os.environ[k] = v
  return notebook, saved


def test_every_cell_runs(executed):
  notebook, _ = executed
  errors = [f"cell {i}: {out['ename']}: {out['evalue']}" for i, cell in enumerate(notebook.cells)
            if cell.cell_type == 'code' for out in cell.outputs if out['output_type'] == 'error']
  assert not errors, '\n'.join(errors)
  # Every code cell ran, in order.
  counts = [cell.execution_count for cell in notebook.cells if cell.cell_type == 'code']
  assert counts == list(range(1, len(counts) + 1))


def test_saved_outputs_come_from_the_current_code(executed):
  notebook, saved = executed
  tagged = [i for i, cell in enumerate(saved.cells) if 'deterministic' in cell.metadata.get('tags', [])]
  assert len(tagged) >= 4  # The parameters, the layer table, the exchange, the dropout masks.
  for i in tagged:
    assert _text(saved.cells[i]), f'cell {i} is tagged deterministic but has no saved output'
    assert _text(notebook.cells[i]) == _text(saved.cells[i]), (
        f'cell {i} of {NOTEBOOK.name} prints something else now: re-run the notebook and save it')
  # Every saved code cell has outputs: the notebook is committed executed (figures render).
  assert all(cell.outputs for cell in saved.cells if cell.cell_type == 'code' and
             'parameters' not in cell.metadata.get('tags', []))


ONE_DEVICE = r'''
import json, os, sys
import matplotlib
matplotlib.use('Agg')
import nbformat
notebook = nbformat.read(sys.argv[1], as_version=4)
code = [c.source for c in notebook.cells if c.cell_type == 'code']
namespace = {'display': lambda *a, **k: None}
exec(code[0], namespace)  # The parameters: 2 host CPU devices asked for before JAX starts.
import jax
# A one-GPU host: the default backend shows one device; the host CPU's are still 2.
real = jax.devices
jax.devices = lambda backend=None: real(backend) if backend is not None else real()[:1]
jax.device_count = lambda backend=None: len(jax.devices(backend))
assert len(jax.devices()) == 1 and len(jax.devices('cpu')) == 2
last = next(i for i, source in enumerate(code) if 'the same masks on the 1x2 mesh' in source)
for source in code[1:last + 1]:
  source = '\n'.join(line for line in source.splitlines() if not line.lstrip().startswith('%'))
  exec(compile(source, 'inspect.ipynb', 'exec'), namespace)
'''


def test_the_exchange_cells_run_where_the_default_backend_has_one_device(tiny_run, tmp_path):
  """A one-GPU host (the default backend's jax.devices() patched to one device): the exchange
  cell builds its 1x2 mesh from the 2 host CPU devices the first cell asks for, says so, and
  shows the same exchanges as the saved notebook; the cells that use the mesh run."""
  script = tmp_path / 'one_device.py'
  script.write_text(ONE_DEVICE)
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  env.update(JAX_PLATFORMS='cpu', ALEXNET_NOTEBOOK_WORKDIR=tiny_run[1], ALEXNET_NOTEBOOK_FAST='1',
             PYTHONPATH=os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get('PYTHONPATH')] if p]))
  done = subprocess.run([sys.executable, str(script), str(NOTEBOOK)], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  assert 'has 1 device: the 1x2 mesh is on 2 host CPU devices.' in done.stdout
  saved = nbformat.read(NOTEBOOK, as_version=4)
  exchange = next(c for c in saved.cells if c.cell_type == 'code' and 'inspection.exchanges' in c.source)
  for line in _text(exchange).splitlines():
    assert line in done.stdout, line
  assert 'the same masks on the 1x2 mesh: True' in done.stdout
  assert 'logits on one device and on the 1x2 mesh agree to' in done.stdout
