"""The results table: each run's validation error beside the paper's number (Table 2, Sec. 3-7).

  python -m alexnet_jax.analysis.report runs/paper runs/paper_no_lrn ... [--output=report.md]

Each run directory holds config.json, metrics.jsonl and eval.json (train.py writes them).
A run is identified by diffing its config against alexnet_jax.config.paper_config() (what
configs/paper.py gives): the paper's
run (Table 2, "1 CNN": 40.7% / 18.2% val top-1 / top-5, 10 views) or one of its
ablations, each compared with the effect the paper reports. Two other references are
known: a run of configs/original_code.py is compared with the released 2012 run's logged
40.66% / 18.21% (Table 2's single-CNN result, so 10 views), and a run of
configs/caffe_bvlc.py with the Caffe model zoo's bvlc_alexnet, 57.1% / 80.2% top-1 / top-5
accuracy with the centre crop, i.e. 42.9% / 19.8% error. A run whose last logged epoch
is short of its config's num_epochs, or that has no eval.json, is marked incomplete and
its numbers are never shown as final.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from typing import Any

from absl import app, flags

from alexnet_jax import config as configs_lib
from alexnet_jax import rundir, storage
from alexnet_jax.rundir import resume

# Table 2, "1 CNN": ILSVRC-2012 validation top-1 / top-5 error (%).
PAPER_ONE_CNN = (40.7, 18.2)
# The released 2012 run's notes (layers-145): validation top-1 / top-5 error (%).
ORIGINAL_RUN = (40.66, 18.21)
# Caffe model zoo, bvlc_alexnet: 57.1% / 80.2% top-1 / top-5 accuracy, centre crop.
CAFFE_BVLC = (42.9, 19.8)


@dataclasses.dataclass(frozen=True)
class Reference:
  """Another published AlexNet whose config this project has, with its reported errors."""
  name: str  # What the table's "what differs" column says for a run of exactly this config.
  config: Any  # A function returning its ConfigDict (alexnet_jax.config).
  errors: tuple[float, float]  # top-1 / top-5 error (%).
  views: str  # 'ten' or 'center': the evaluation the numbers come from.
  source: str


REFERENCES = (
    Reference('the original-code config (configs/original_code.py)', configs_lib.original_code_config,
              ORIGINAL_RUN, 'ten', 'released 2012 run, layers-145'),
    Reference('the Caffe config (configs/caffe_bvlc.py)', configs_lib.caffe_bvlc_config, CAFFE_BVLC, 'center',
              'bvlc_alexnet, Caffe model zoo, centre crop'),
)


@dataclasses.dataclass(frozen=True)
class Ablation:
  field: str  # Dotted config path.
  name: str
  effect: str  # The paper's reported change in error, in the section named by `name`.
  top1: float | None  # The same, as numbers (percentage points), where the paper gives them.
  top5: float | None
  value: Any = None  # The ablated value, where only one value is the ablation (else any change).


ABLATIONS = (
    Ablation('model.lrn', 'no LRN (Sec. 3.3)', '+1.4 / +1.2', 1.4, 1.2),
    Ablation('model.pool_window', 'pool 2/2, not overlapping (Sec. 3.4)', '+0.4 / +0.3', 0.4, 0.3),
    Ablation('model.columns', 'one column (Sec. 3.2)', '+1.7 / +1.2', 1.7, 1.2),
    Ablation('data.lighting', 'no PCA lighting (Sec. 4.1)', '> +1 top-1', None, None, 'none'),
    Ablation('model.remove_conv', 'a conv layer removed (Sec. 7)', '~ +2 top-1', None, None),
)


def _get(tree: dict, dotted: str, default=None):
  for key in dotted.split('.'):
    if not isinstance(tree, dict) or key not in tree:
      return default
    tree = tree[key]
  return tree


def paper_config() -> dict:
  return json.loads(configs_lib.paper_config().to_json())


def reference_of(config: dict) -> Reference | None:
  """The reference whose config `config` is (up to the fields that are not the experiment), if any."""
  for ref in REFERENCES:
    if not differences(config, json.loads(ref.config().to_json())):
      return ref
  return None


def differences(config: dict, reference: dict) -> dict[str, tuple[Any, Any]]:
  """Dotted field -> (run's value, paper config's value) where they differ.

  Fields that are not the experiment (`rundir.resume.NOT_THE_EXPERIMENT`, the classification
  a resume uses too) are skipped. A field only one side has counts only if
  its value there is truthy: model.remove_conv = '' was added after some runs were made.
  """
  run, ref = resume.flatten(config), resume.flatten(reference)
  out = {}
  for key in sorted(set(run) | set(ref)):
    if resume.matches(key, resume.NOT_THE_EXPERIMENT):
      continue
    if (key not in ref and not run[key]) or (key not in run and not ref[key]):
      continue
    if run.get(key) != ref.get(key):
      out[key] = (run.get(key), ref.get(key))
  return out


@dataclasses.dataclass
class Run:
  path: str
  config: dict
  records: list[dict]
  eval: dict | None

  @property
  def epochs_run(self) -> float:
    epochs = [r['epoch'] for r in self.records if 'epoch' in r]
    return max(epochs) if epochs else 0.0

  @property
  def epochs_planned(self) -> float:
    return float(self.config.get('num_epochs', 0))

  @property
  def complete(self) -> bool:
    return self.eval is not None and self.epochs_run >= self.epochs_planned


def read_run(path: str) -> Run:
  """A finished or running run's files (local or gs://), read through `rundir.RunDir`."""
  run = rundir.RunDir(path)
  config = json.loads(run.config.read_text())
  records = []
  if run.metrics.exists():
    with run.metrics.open() as f:
      records = [json.loads(line) for line in f if line.strip()]
  result = json.loads(run.eval.read_text()) if run.eval.exists() else None
  return Run(path, config, records, result)


def errors(run: Run, views: str) -> tuple[float, float] | None:
  """(top-1, top-5) error in % for 'center' or 'ten' views: eval.json's for a complete
  run, else the last validation line of metrics.jsonl."""
  if run.complete:
    if views not in run.eval:
      return None
    return 100 * run.eval[views]['top1_error'], 100 * run.eval[views]['top5_error']
  key = f'val_{views}_top1_error'
  last = [r for r in run.records if key in r]
  if not last:
    return None
  return 100 * last[-1][key], 100 * last[-1][f'val_{views}_top5_error']


def identify(run: Run, reference: dict) -> tuple[str, Ablation | None, bool]:
  """(what differs, the ablation if it is the only difference, whether the paper's
  numbers apply: same dataset and no differences outside the ablation fields)."""
  diff = differences(run.config, reference)
  found = [a for a in ABLATIONS
           if a.field in diff and a.value in (None, diff[a.field][0])]
  comparable = 'data.source' not in diff and 'model.num_classes' not in diff
  parts = [f'{a.name}: {a.field}={diff[a.field][0]!r}' for a in found]
  if not comparable:
    parts.insert(0, f"dataset {_get(run.config, 'data.source')!r}, not ILSVRC-2012")
  others = [k for k in diff if k not in ('data.source', 'model.num_classes')
            and k not in [a.field for a in found]]
  if others:
    parts.append('also ' + ', '.join(others))
  text = '; '.join(parts) if parts else 'the paper config'
  # Only a run that differs in one ablation field and nothing else matches a paper claim.
  single = found[0] if len(found) == 1 and not others else None
  return text, single, comparable and not others


def _pair(e: tuple[float, float] | None) -> str:
  return '-' if e is None else f'{e[0]:.1f} / {e[1]:.1f}'


def _hardware(run: Run) -> str:
  return (run.eval or {}).get('devices', '-')


def table(runs: list[Run]) -> str:
  """The Markdown table, one row per run; ablations compared with a complete paper run."""
  reference = paper_config()
  ids = [identify(r, reference) for r in runs]
  baselines = [r for r, (_, abl, ok) in zip(runs, ids)
               if ok and abl is None and r.complete and not differences(r.config, reference)]
  base = errors(baselines[0], 'ten') if baselines else None
  lines = ['| run | what differs | epochs run / planned | top-1 / top-5 centre | '
           'top-1 / top-5 10-view | 10-view - centre | paper | difference | hardware |',
           '|---|---|---|---|---|---|---|---|---|']
  for run, (what, ablation, comparable) in zip(runs, ids):
    centre, ten = errors(run, 'center'), errors(run, 'ten')
    known = reference_of(run.config)
    epochs = f'{run.epochs_run:g} / {run.epochs_planned:g}'
    if not run.complete:
      epochs += ' **incomplete**'
      centre_text = f'incomplete: {_pair(centre)}' if centre else 'incomplete'
      ten_text = f'incomplete: {_pair(ten)}' if ten else 'incomplete'
    else:
      centre_text, ten_text = _pair(centre), _pair(ten)
    # Sec. 4.1's 10-view test against a single centre crop, from eval.json.
    views_text = '-'
    if run.complete and centre and ten:
      views_text = f'{ten[0] - centre[0]:+.1f} / {ten[1] - centre[1]:+.1f}'
    paper_text, diff_text = '-', '-'
    if known is not None:
      what = known.name
      paper_text = f'{known.errors[0]} / {known.errors[1]} ({known.source})'
      ours = centre if known.views == 'center' else ten
      if run.complete and ours:
        diff_text = (f'{ours[0] - known.errors[0]:+.1f} / {ours[1] - known.errors[1]:+.1f} '
                     f'({"centre" if known.views == "center" else "10-view"})')
    elif not comparable:
      paper_text = 'n/a (other dataset or setup)'
    elif ablation is None and what == 'the paper config':
      paper_text = f'{PAPER_ONE_CNN[0]} / {PAPER_ONE_CNN[1]} (Table 2, 1 CNN)'
      if run.complete and ten:
        diff_text = f'{ten[0] - PAPER_ONE_CNN[0]:+.1f} / {ten[1] - PAPER_ONE_CNN[1]:+.1f}'
    elif ablation is not None:
      paper_text = f'{ablation.effect} vs 1 CNN'
      if run.complete and ten and base:
        diff_text = f'{ten[0] - base[0]:+.1f} / {ten[1] - base[1]:+.1f} vs paper-config run'
      elif run.complete:
        diff_text = 'no complete paper-config run to compare'
    lines.append(f'| {run.path} | {what} | {epochs} | {centre_text} | {ten_text} | '
                 f'{views_text} | {paper_text} | {diff_text} | {_hardware(run)} |')
  return '\n'.join(lines)


FLAGS = flags.FLAGS


def main(argv):
  paths = argv[1:]
  if not paths:
    sys.exit('usage: python -m alexnet_jax.analysis.report RUN_DIR... [--output=FILE]')
  text = table([read_run(p) for p in paths])
  print(text)
  if FLAGS.output:
    storage.write_whole(FLAGS.output, text + '\n')


if __name__ == '__main__':
  # Defined here, not on import: the modules' flags would clash when imported together.
  flags.DEFINE_string('output', None, 'Also write the table to this Markdown file.')
  app.run(main)
