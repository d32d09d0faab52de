"""The results table from hand-written run directories."""

import json
import os
import subprocess
import sys

from alexnet_jax.analysis import report
from configs import default, paper

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def write_run(path, config, metrics, result=None):
  os.makedirs(path)
  with open(os.path.join(path, 'config.json'), 'w') as f:
    f.write(config.to_json(indent=2))
  with open(os.path.join(path, 'metrics.jsonl'), 'w') as f:
    for record in metrics:
      f.write(json.dumps(record) + '\n')
  if result is not None:
    with open(os.path.join(path, 'eval.json'), 'w') as f:
      json.dump(result, f)


def eval_json(centre, ten):
  return {'step': 900, 'center': {'top1_error': centre[0], 'top5_error': centre[1],
                                  'examples': 50000},
          'ten': {'top1_error': ten[0], 'top5_error': ten[1], 'examples': 50000},
          'devices': '2 x gpu'}


def make_runs(tmp_path):
  base = paper.get_config()
  base.data.manual_dir = '/data/ilsvrc'  # Where the data lives is not the experiment.
  write_run(str(tmp_path / 'paper'), base,
            [{'step': 900, 'epoch': 90.0, 'loss': 1.5, 'top1_error': 0.3, 'top5_error': 0.1,
              'learning_rate': 1e-5},
             {'step': 900, 'val_center_top1_error': 0.44, 'val_center_top5_error': 0.21}],
            eval_json((0.44, 0.21), (0.42, 0.195)))
  no_lrn = paper.get_config()
  no_lrn.model.lrn = False
  # Stopped at epoch 10 of 90, without eval.json: an interim number, never final.
  write_run(str(tmp_path / 'no_lrn'), no_lrn,
            [{'step': 100, 'epoch': 10.0, 'loss': 3.0, 'top1_error': 0.7, 'top5_error': 0.4,
              'learning_rate': 0.01},
             {'step': 100, 'val_center_top1_error': 0.6, 'val_center_top5_error': 0.35}])
  one_column = paper.get_config()
  one_column.model.columns = 1
  write_run(str(tmp_path / 'one_column'), one_column,
            [{'step': 900, 'epoch': 90.0, 'loss': 1.6}], eval_json((0.46, 0.22), (0.44, 0.21)))
  # An ablation with a second, non-ablation change: the paper's effect does not apply.
  no_lighting = paper.get_config()
  no_lighting.data.lighting = 'none'
  no_lighting.batch_size = 256
  write_run(str(tmp_path / 'no_lighting'), no_lighting,
            [{'step': 450, 'epoch': 90.0, 'loss': 1.6}], eval_json((0.5, 0.25), (0.48, 0.24)))
  return [str(tmp_path / n) for n in ('paper', 'no_lrn', 'one_column', 'no_lighting')]


def rows(text):
  lines = text.strip().splitlines()
  header = [c.strip() for c in lines[0].strip('|').split('|')]
  return [dict(zip(header, (c.strip() for c in line.strip('|').split('|')))) for line in lines[2:]]


def test_table(tmp_path):
  paths = make_runs(tmp_path)
  table = rows(report.table([report.read_run(p) for p in paths]))
  paper_row, no_lrn_row, one_column_row, no_lighting_row = table
  assert paper_row['what differs'] == 'the paper config'
  assert paper_row['epochs run / planned'] == '90 / 90'
  assert paper_row['top-1 / top-5 centre'] == '44.0 / 21.0'
  assert paper_row['top-1 / top-5 10-view'] == '42.0 / 19.5'
  assert paper_row['10-view - centre'] == '-2.0 / -1.5'
  assert paper_row['paper'] == '40.7 / 18.2 (Table 2, 1 CNN)'
  assert paper_row['difference'] == '+1.3 / +1.3'  # 42.0 - 40.7, 19.5 - 18.2.
  assert paper_row['hardware'] == '2 x gpu'

  assert no_lrn_row['what differs'] == 'no LRN (Sec. 3.3): model.lrn=False'
  assert no_lrn_row['epochs run / planned'] == '10 / 90 **incomplete**'
  assert no_lrn_row['top-1 / top-5 centre'] == 'incomplete: 60.0 / 35.0'
  assert no_lrn_row['top-1 / top-5 10-view'] == 'incomplete'
  assert no_lrn_row['10-view - centre'] == '-'
  assert no_lrn_row['paper'] == '+1.4 / +1.2 vs 1 CNN'
  assert no_lrn_row['difference'] == '-'
  assert no_lrn_row['hardware'] == '-'

  assert one_column_row['what differs'] == 'one column (Sec. 3.2): model.columns=1'
  assert one_column_row['paper'] == '+1.7 / +1.2 vs 1 CNN'
  # 44.0 - 42.0, 21.0 - 19.5 against the complete paper-config run.
  assert one_column_row['difference'] == '+2.0 / +1.5 vs paper-config run'

  assert no_lighting_row['what differs'] == (
      "no PCA lighting (Sec. 4.1): data.lighting='none'; also batch_size")
  assert no_lighting_row['paper'] == 'n/a (other dataset or setup)'
  assert no_lighting_row['difference'] == '-'
  assert no_lighting_row['10-view - centre'] == '-2.0 / -1.0'


def test_command_writes_the_same_table(tmp_path):
  paths = make_runs(tmp_path)
  output = str(tmp_path / 'report.md')
  done = subprocess.run([sys.executable, '-m', 'alexnet_jax.analysis.report', *paths,
                         f'--output={output}'],
                        cwd=REPO, capture_output=True, text=True, check=True)
  with open(output) as f:
    written = f.read()
  assert written.strip() == done.stdout.strip()
  assert written.strip() == report.table([report.read_run(p) for p in paths])


OUTSIDE = '''
import importlib.util, json
import alexnet_jax.bench.__main__ as bench
from alexnet_jax.analysis import report
print(json.dumps({
    'configs_on_path': importlib.util.find_spec('configs') is not None,
    'paper': report.paper_config(),
    'bench': json.loads(bench._run_spec(bench._parse([])).config_json),
}))
'''


def test_report_and_bench_read_the_configs_from_any_directory(tmp_path):
  # Outside the repository (no configs/ on sys.path), as an installed package is run.
  env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
  done = subprocess.run([sys.executable, '-c', OUTSIDE], cwd=tmp_path, env=env,
                        capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-2000:]
  got = json.loads(done.stdout.strip().splitlines()[-1])
  assert not got['configs_on_path']  # Otherwise this would not test anything.
  assert got['paper'] == json.loads(paper.get_config().to_json())
  # The bench's config is configs/default.py's with its command-line defaults applied.
  want = default.get_config()
  want.batch_size, want.model.dtype, want.mesh.data, want.mesh.model = 32, 'float32', 1, 1
  assert got['bench'] == json.loads(want.to_json())


def test_original_code_and_caffe_runs_beside_their_own_references(tmp_path):
  from configs import caffe_bvlc, original_code  # pylint: disable=g-import-not-at-top
  original = original_code.get_config()
  original.data.manual_dir = '/data/ilsvrc'
  write_run(str(tmp_path / 'original'), original,
            [{'step': 900, 'epoch': 90.0, 'loss': 1.5}], eval_json((0.43, 0.2), (0.41, 0.1871)))
  caffe = caffe_bvlc.get_config()
  write_run(str(tmp_path / 'caffe'), caffe, [{'step': 900, 'epoch': 90.0, 'loss': 1.5}],
            eval_json((0.45, 0.21), (0.44, 0.2)))
  # A run of the original config with one more change is no longer that run.
  changed = original_code.get_config()
  changed.model.cnorm2 = False
  write_run(str(tmp_path / 'changed'), changed, [{'step': 900, 'epoch': 90.0, 'loss': 1.5}],
            eval_json((0.45, 0.21), (0.44, 0.2)))
  names = ('original', 'caffe', 'changed')
  original_row, caffe_row, changed_row = rows(report.table(
      [report.read_run(str(tmp_path / n)) for n in names]))
  assert original_row['what differs'] == 'the original-code config (configs/original_code.py)'
  assert original_row['paper'] == '40.66 / 18.21 (released 2012 run, layers-145)'
  assert original_row['difference'] == '+0.3 / +0.5 (10-view)'  # 41.0 - 40.66, 18.71 - 18.21.
  assert caffe_row['what differs'] == 'the Caffe config (configs/caffe_bvlc.py)'
  assert caffe_row['paper'] == '42.9 / 19.8 (bvlc_alexnet, Caffe model zoo, centre crop)'
  assert caffe_row['difference'] == '+2.1 / +1.2 (centre)'  # 45.0 - 42.9, 21.0 - 19.8.
  # data.lighting='original' is not the no-lighting ablation: it is listed as a change.
  assert changed_row['what differs'].startswith('also data.lighting, data.mean_patch')
  assert changed_row['paper'] == 'n/a (other dataset or setup)'
