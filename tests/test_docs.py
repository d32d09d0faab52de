"""Every figure the README and docs quote equals its committed measurement, and the docs say
what the code does.

The convention: a figure measured on this project is written in README.md or docs/*.md as

  <!--fig demo.json eval.center.top1_error *100 {:.1f}-->16.2<!--/fig-->

(invisible on GitHub but for the value): the file under docs/results/, the key path into its
JSON (dots; list indices are numbers), an optional `*N` or `/N`, and the Python format of the
value shown. The test recomputes each and fails when the file and the text disagree, so a
re-measured figure cannot go stale silently. A figure given as a placeholder
`{{demo.json wall_s /60 {:.1f}}}`, and every figure already in the text, is (re)written from
its file by

  python -m tests.test_docs

The demo's printed summary is a ```text block after `<!--printed demo.json-->`. Numbers with
a unit of time, speed or size (minutes, images/s, GB) must be such figures unless they are
in ALLOWED (sizes that are arithmetic or published, not measured here).
"""

import json
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
RESULTS = ROOT / 'docs' / 'results'
FIG = re.compile(r'<!--fig (?P<spec>(?P<file>[\w.-]+\.json) (?P<path>[\w.]+)'
                 r'(?: (?P<op>[*/])(?P<num>[\d.e]+))? (?P<fmt>\{[^}]*\}))-->(?P<value>.*?)<!--/fig-->')
PLACEHOLDER = re.compile(r'\{\{(?P<spec>(?P<file>[\w.-]+\.json) (?P<path>[\w.]+)'
                         r'(?: (?P<op>[*/])(?P<num>[\d.e]+))? (?P<fmt>\{[^}]*\}))\}\}')
PRINTED = re.compile(r'<!--printed (?P<file>[\w.-]+\.json)-->\n```text\n(?P<body>.*?)```', re.S)
# Numbers with a unit that are not measurements of this code: ImageNet's published tar sizes,
# sizes that are arithmetic (256 x 256 x 3 bytes per raw image, times the image counts), and
# the memory in GPU product names (H100 SXM 80GB).
ALLOWED = {'147 GB', '6.7 GB', '252 GB', '9.8 GB', '80GB'}
UNITS = re.compile(r'(?<![\w.,])(\d[\d,.]*\d|\d)\s*(minutes|images/s|GB)\b(?!/)')


def documents() -> list[pathlib.Path]:
  return [ROOT / 'README.md'] + sorted((ROOT / 'docs').glob('*.md'))


def value_at(data, path: str):
  for key in path.split('.'):
    data = data[int(key)] if isinstance(data, list) else data[key]
  return data


def render(match) -> str:
  """The text a figure's spec gives from its file."""
  value = value_at(json.loads((RESULTS / match['file']).read_text()), match['path'])
  if match['op'] == '*':
    value = value * float(match['num'])
  elif match['op'] == '/':
    value = value / float(match['num'])
  return match['fmt'].format(value)


def figures() -> list[tuple[str, re.Match]]:
  return [(doc.relative_to(ROOT).as_posix(), m) for doc in documents()
          for m in FIG.finditer(doc.read_text())]


def test_the_docs_quote_measurements():
  quoted = {m['file'] for _, m in figures()}
  assert {'demo.json', 'imagenet_build.json', 'install.json', 'test_suite.json'} <= quoted


@pytest.mark.parametrize('doc, match', figures(), ids=lambda x: x if isinstance(x, str) else x['spec'])
def test_each_quoted_figure_equals_its_file(doc, match):
  assert match['value'] == render(match), (
      f"{doc} quotes {match['value']!r} for {match['spec']}; docs/results/{match['file']} "
      f"gives {render(match)!r} (python -m tests.test_docs rewrites it)")


def test_no_placeholder_is_left_and_every_unit_figure_is_sourced():
  for doc in documents():
    text = doc.read_text()
    assert not PLACEHOLDER.search(text), f'{doc.name}: run python -m tests.test_docs'
    plain = FIG.sub('', PRINTED.sub('', text))  # Quoted figures and the printed block removed.
    plain = re.sub(r'^```.*?^```', '', plain, flags=re.S | re.M)  # Commands are not figures.
    loose = [m.group(0) for m in UNITS.finditer(plain) if m.group(0) not in ALLOWED]
    assert not loose, f'{doc.name}: figures with no file under docs/results/: {loose}'


def test_the_printed_summary_is_the_measured_one():
  text = (ROOT / 'README.md').read_text()
  blocks = list(PRINTED.finditer(text))
  assert blocks
  for m in blocks:
    printed = json.loads((RESULTS / m['file']).read_text())['printed']
    assert m['body'].splitlines() == printed
    assert any(line.startswith('Held-out (ten views)') for line in printed)


def test_every_result_file_says_where_it_comes_from():
  for path in RESULTS.glob('*.json'):
    data = json.loads(path.read_text())
    assert {'command', 'date', 'cpu_model'} <= data.keys(), path.name
    assert any(path.name in doc.read_text() for doc in documents()), f'{path.name} is quoted nowhere'


def test_the_demo_report_shows_the_measured_run():
  report = (ROOT / 'docs' / 'demo_report.md').read_text().splitlines()[2]
  cells = [c.strip() for c in report.strip('|').split('|')]
  demo = json.loads((RESULTS / 'demo.json').read_text())['eval']
  assert cells[3] == f"{100 * demo['center']['top1_error']:.1f} / {100 * demo['center']['top5_error']:.1f}"
  assert cells[4] == f"{100 * demo['ten']['top1_error']:.1f} / {100 * demo['ten']['top5_error']:.1f}"


def test_no_stale_phrases():
  for doc in documents() + [ROOT / 'CHANGELOG.md']:
    text = PRINTED.sub('', doc.read_text())  # The program's own lines are not the docs' text.
    for phrase in (r"this project's (2-core )?(CPU )?machine", r'STYLE\.md', r'\bissue \d+', r'#\d{1,3}\b',
                   r'python -m alexnet_jax\.(stats|prepare|summary|convert|report|figures|cifar10)\b'):
      assert not re.search(phrase, text), f'{doc.name}: {phrase}'
    # Top-5 chance on 10 classes is 50% (5 of 10 labels), not top-1's 90%.
    for sentence in re.findall(r'[^.]*\b[Cc]hance\b[^.]*', text):
      assert 'top-5' not in sentence or '50%' in sentence, f'{doc.name}: {sentence.strip()}'


def test_local_links_resolve():
  for doc in documents():
    for target in re.findall(r'\]\(([^)#\s]+)(?:#[^)]*)?\)', doc.read_text()):
      if not re.match(r'https?://', target):
        assert (doc.parent / target).exists(), f'{doc.name} links to a missing {target}'


def test_the_files_the_docs_name_exist():
  """Test files, modules and configs named in README.md and docs/*.md (`tests/x.py`,
  `alexnet_jax/x/y.py`, `configs/x.py`) are where the docs say."""
  for doc in documents():
    for path in re.findall(r'\b((?:tests|alexnet_jax|configs|launch|notebooks)/[\w/]+\.(?:py|sh|sbatch|ipynb))',
                           doc.read_text()):
      assert (ROOT / path).exists(), f'{doc.name} names a missing {path}'


def _flat(d: dict, prefix: str = '') -> dict:
  out = {}
  for k, v in d.items():
    out.update(_flat(v, f'{prefix}{k}.') if isinstance(v, dict) else {f'{prefix}{k}': v})
  return out


def test_the_demo_differs_from_the_paper_in_the_fields_the_docs_list():
  from configs import demo, paper  # pylint: disable=g-import-not-at-top
  ours = _flat(json.loads(demo.get_config().to_json()))
  theirs = _flat(json.loads(paper.get_config().to_json()))
  changed = {k for k in ours.keys() | theirs.keys() if ours.get(k) != theirs.get(k)}
  text = (ROOT / 'docs' / 'reproducing.md').read_text()
  section = text.split('## The demo\n', 1)[1].split('\n## ', 1)[0]
  listed = set(re.findall(r'^\| `([\w.]+)` \|', section, re.M))
  assert listed == changed
  for doc in ('README.md', 'docs/reproducing.md'):
    counts = re.findall(r'(\d+) fields', (ROOT / doc).read_text())
    assert counts and all(int(c) == len(changed) for c in counts), (doc, counts, len(changed))


def test_the_parameter_layout_table_is_the_code():
  import alexnet_jax  # pylint: disable=g-import-not-at-top
  text = (ROOT / 'docs' / 'model.md').read_text()
  rows = re.findall(r'^\| (\w+) \| `\[([\d, ]+)\]` \| `\[([\d, ]+)\]` \|', text, re.M)
  shapes = alexnet_jax.param_shapes(alexnet_jax.model_config())
  as_tuple = lambda s: tuple(int(n) for n in s.split(','))
  assert {name: {'kernel': as_tuple(k), 'bias': as_tuple(b)} for name, k, b in rows} == {
      name: {'kernel': tuple(v['kernel']), 'bias': tuple(v['bias'])} for name, v in shapes.items()}
  total = sum(int(np.prod(s)) for v in shapes.values() for s in v.values())
  assert f'{total:,} parameters' in text


def test_a_config_file_works_from_any_directory(tmp_path):
  """--config=/abs/path/configs/paper.py from another directory, with only the package on the
  path (no configs folder importable): the config files import alexnet_jax.config."""
  (tmp_path / 'pkg').mkdir()
  (tmp_path / 'pkg' / 'alexnet_jax').symlink_to(ROOT / 'alexnet_jax', target_is_directory=True)
  (tmp_path / 'elsewhere').mkdir()
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=str(tmp_path / 'pkg'),
             XLA_FLAGS='--xla_force_host_platform_device_count=1')
  for name in ('paper', 'paper_no_lrn', 'demo'):
    done = subprocess.run([sys.executable, '-m', 'alexnet_jax.main', f'--config={ROOT}/configs/{name}.py',
                           f'--workdir={tmp_path}/runs/{name}', '--dry_run'], cwd=tmp_path / 'elsewhere',
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f'{name}:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}'
    assert 'dry run:' in done.stdout


def rewrite() -> None:
  """Writes every figure and printed block of README.md and docs/*.md from docs/results/."""
  for doc in documents():
    text = doc.read_text()
    new = PLACEHOLDER.sub(lambda m: f"<!--fig {m['spec']}-->{render(m)}<!--/fig-->", text)
    new = FIG.sub(lambda m: f"<!--fig {m['spec']}-->{render(m)}<!--/fig-->", new)
    new = PRINTED.sub(lambda m: f"<!--printed {m['file']}-->\n```text\n" + ''.join(
        line + '\n' for line in json.loads((RESULTS / m['file']).read_text())['printed']) + '```', new)
    if new != text:
      doc.write_text(new)
      print(f'rewrote {doc.relative_to(ROOT)}')


if __name__ == '__main__':
  rewrite()
