"""Error counting on non-finite scores, metrics.jsonl after a resume, the committed demo table."""

import json
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np

from alexnet_jax import evaluate, metrics
from alexnet_jax.experiments import cifar10

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAN, INF = float('nan'), float('inf')


def numpy_error_counts(scores, labels, mask):
  """One row at a time: a non-finite row is wrong; ties count against the model."""
  top1 = top5 = 0
  for row, label, keep in zip(scores, labels, mask):
    if not keep:
      continue
    if not np.all(np.isfinite(row)):
      top1, top5 = top1 + 1, top5 + 1
      continue
    higher_or_equal = sum(1 for j, s in enumerate(row) if j != label and s >= row[label])
    top1 += higher_or_equal >= 1
    top5 += higher_or_equal >= 5
  return [top1, top5, int(np.sum(mask))]


# Seven classes, so that top-5 can miss. Label first, then what the row is.
HAND_ROWS = [
    (0, [5, 1, 1, 1, 1, 1, 1]),  # Right.
    (0, [5, 1, 1, NAN, 1, 1, 1]),  # Best finite score, but a NaN elsewhere: wrong.
    (2, [NAN] * 7),  # A diverged model: wrong.
    (1, [0, INF, 0, 0, 0, 0, 0]),  # Inf at the label: wrong.
    (0, [3, -INF, 0, 0, 0, 0, 0]),  # -Inf elsewhere: wrong.
    (0, [2, 2, 0, 0, 0, 0, 0]),  # A tie for first: a top-1 error, inside the top 5.
    (6, [7, 6, 5, 4, 3, 2, 1]),  # Last of seven: wrong in both.
    (3, [NAN] * 7),  # Masked out: not counted.
]


def test_error_counts_count_non_finite_rows_as_errors():
  labels = np.array([label for label, _ in HAND_ROWS])
  scores = np.array([row for _, row in HAND_ROWS], np.float32)
  mask = np.array([True] * 7 + [False])
  got = np.asarray(evaluate.error_counts(jnp.asarray(scores), jnp.asarray(labels),
                                         jnp.asarray(mask)))
  # By hand from the comments above: rows 1-6 are top-1 errors; rows 1-4 and 6 top-5 errors.
  np.testing.assert_array_equal(got, [6, 5, 7])
  np.testing.assert_array_equal(got, numpy_error_counts(scores, labels, mask))


def test_error_counts_match_numpy_on_random_rows_with_ties_and_nans():
  rng = np.random.default_rng(0)
  scores = rng.integers(0, 4, size=(200, 10)).astype(np.float32)  # Many ties.
  scores[rng.random(scores.shape) < 0.01] = NAN
  scores[rng.random(scores.shape) < 0.005] = INF
  labels = rng.integers(0, 10, size=200)
  mask = rng.random(200) < 0.9
  got = evaluate.error_counts(jnp.asarray(scores), jnp.asarray(labels), jnp.asarray(mask))
  np.testing.assert_array_equal(np.asarray(got), numpy_error_counts(scores, labels, mask))


def test_cifar10_counts_errors_by_the_same_rule():
  labels = np.array([label for label, _ in HAND_ROWS[:7]])
  logits = np.array([row for _, row in HAND_ROWS[:7]], np.float32)
  # argmax alone calls the tie (row 5) and the rows with an infinity (3 and 4) right.
  assert int(cifar10.count_errors(jnp.asarray(logits), jnp.asarray(labels))) == 6


def write_rows(path, steps):
  with open(path, 'w') as f:
    for step in steps:
      f.write(json.dumps({'step': step, 'loss': 1.0 / step}) + '\n')
      if step % 20 == 0:
        f.write(json.dumps({'step': step, 'val_center_top1_error': 0.5}) + '\n')


def read_steps(path):
  with open(path) as f:
    return [json.loads(line)['step'] for line in f]


def test_writer_drops_the_rows_after_the_restored_step(tmp_path):
  path = tmp_path / 'metrics.jsonl'
  write_rows(path, [10, 20, 30, 40, 50])
  writer = metrics.Writer(str(tmp_path), enabled=True)
  writer.drop_after(30)
  assert read_steps(path) == [10, 20, 20, 30]
  with open(path) as f:
    assert json.loads(f.readlines()[-1]) == {'step': 30, 'loss': 1.0 / 30}
  writer.write(31, {'loss': 0.5})  # Appending goes on after the rewrite.
  assert read_steps(path) == [10, 20, 20, 30, 31]
  assert [n for n in os.listdir(tmp_path) if 'metrics' in n] == ['metrics.jsonl']  # No temporary left.


def test_writer_drops_a_torn_last_line_and_only_process_0_rewrites(tmp_path):
  path = tmp_path / 'metrics.jsonl'
  write_rows(path, [10, 20])
  with open(path, 'a') as f:
    f.write('{"step": 30, "lo')  # A crash in the middle of a write.
  metrics.Writer(str(tmp_path), enabled=False).drop_after(10)
  assert path.read_text().endswith('"lo')  # Another process: the file is not its to touch.
  metrics.Writer(str(tmp_path), enabled=True).drop_after(40)
  assert read_steps(path) == [10, 20, 20]
  metrics.Writer(str(tmp_path / 'fresh'), enabled=True).drop_after(0)  # No file yet: no-op.
  assert not (tmp_path / 'fresh' / 'metrics.jsonl').exists()


def test_demo_report_names_the_readme_workdir():
  with open(os.path.join(REPO, 'docs', 'demo_report.md')) as f:
    lines = f.read().splitlines()
  runs = [line.split('|')[1].strip() for line in lines[2:]]
  with open(os.path.join(REPO, 'README.md')) as f:
    readme = f.read()
  # The run column is the path the report was given; the README's demo command writes runs/demo.
  assert '--workdir=runs/demo' in readme
  assert runs == ['runs/demo']


LAZY_WORK = '''
import sys, tempfile
import numpy as np
from PIL import Image
import tests.conftest
before = set(sys.modules)
import tensorflow_datasets as tfds
from alexnet_jax import metrics
from alexnet_jax.experiments import cifar10
from configs import cifar10_relu_vs_tanh
config = cifar10_relu_vs_tanh.get_config()
with tfds.testing.mock_data(num_examples=4):
  cifar10.load_cifar10(config)
with tempfile.TemporaryDirectory() as tmp:
  metrics.Writer(tmp).write(1, {'loss': 1.0})
  Image.fromarray(np.zeros([4, 4, 3], np.uint8)).save(tmp + '/x.jpg')
  Image.open(tmp + '/x.jpg').load()
  np.savez(tmp + '/s.npz', mean=np.zeros(3))
  np.load(tmp + '/s.npz')['mean']
new = set(sys.modules) - before - {'configs.cifar10_relu_vs_tanh'}
print(sorted(m for m in new if not m.startswith('__autograph_generated')))
'''


def test_conftest_imports_what_the_tests_would_import_lazily():
  # What mock TFDS data, a metrics row, an image and an .npz load first import mid-suite
  # (seen with sys.modules around each test), in a fresh interpreter after conftest: nothing.
  done = subprocess.run([sys.executable, '-c', LAZY_WORK], capture_output=True, text=True,
                        timeout=300, cwd=REPO)
  assert done.returncode == 0, done.stderr[-2000:]
  assert done.stdout.strip().splitlines()[-1] == '[]'
