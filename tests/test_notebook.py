"""notebooks/inspect.ipynb runs top to bottom, and its saved outputs come from the current code.

The notebook is executed once (nbclient, a fresh kernel) in its fast mode on a tiny run
trained here with its workdir on the test object store (gs://, tests/object_store.py), so it
reads the run as a pod's notebook would. Cells tagged `deterministic` do not depend on the run
(the paper's network, its layer table, the columns' exchange, dropout masks of a fixed key):
their text outputs must equal the ones saved in the notebook.
"""

import os
import pathlib

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
  from alexnet_jax import train  # pylint: disable=g-import-not-at-top
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
    train.train_and_evaluate(tiny_config(images, num_epochs=1, eval_views=('center',)), workdir)
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
