"""The package's shape: no import cycles, few top-level modules, configs parsed at the edges.

Read from the source with `ast` (nothing is imported): every `import` and `from ... import`
of alexnet_jax, at module level or inside a function, is an edge from the module that
holds it to the module it names. A package's __init__.py is a module (the package's name).
"""

import ast
import collections
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / 'alexnet_jax'
MAX_TOP_LEVEL_MODULES = 8

# Where `X.from_config(...)` may be called: the spec classes' own modules, and the command
# lines and notebook readers where a ConfigDict comes in (the one parse at the boundary).
# Everything below a boundary takes the parsed specs (config.RunSpec and its parts).
FROM_CONFIG_ALLOWED = {
    # The specs' own modules.
    'config.py',  # RunSpec.from_config: every section by its owner's spec.
    'optim.py',
    'model/spec.py',
    'model/network.py',  # AlexNet(config), init_params(rng, cfg), apply(params, x, cfg).
    'data/spec.py',
    'parallel/layout.py',  # parallel.apply(params, images, cfg, mesh).
    # Command lines.
    'main.py',
    'aot/__main__.py',
    'bench/__main__.py',
    'bench/stats_subset.py',
    'caffe/convert.py',
    'data/build.py',
    'data/prepare.py',
    'data/statistics.py',
    'experiments/cifar10.py',
    'model/summary.py',
    # Readers of a run's config.json (notebooks, figures).
    'analysis/inspection.py',
    'analysis/figures.py',
}


def _modules() -> dict[str, pathlib.Path]:
  """Dotted module name -> file, for every .py of the package (packages by their name)."""
  modules = {}
  for path in sorted(PACKAGE.rglob('*.py')):
    if '__pycache__' in path.parts:
      continue
    parts = path.relative_to(ROOT).with_suffix('').parts
    if parts[-1] == '__init__':
      parts = parts[:-1]
    modules['.'.join(parts)] = path
  return modules


def _import_graph(modules: dict[str, pathlib.Path]) -> dict[str, set[str]]:
  """Module -> the package's modules it imports (module level and inside functions)."""

  def resolve(name: str) -> str:
    while name and name not in modules:
      name = name.rpartition('.')[0]
    return name

  edges = collections.defaultdict(set)
  for name, path in modules.items():
    package = name if path.name == '__init__.py' else name.rpartition('.')[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
      if isinstance(node, ast.Import):
        for alias in node.names:
          if alias.name.split('.')[0] == 'alexnet_jax':
            edges[name].add(resolve(alias.name))
      elif isinstance(node, ast.ImportFrom):
        base = node.module or ''
        if node.level:  # Relative: `from . import x`, `from ..data import y`.
          parts = package.split('.')
          parts = parts[:len(parts) - node.level + 1]
          base = '.'.join(parts + ([base] if base else []))
        if base.split('.')[0] != 'alexnet_jax':
          continue
        for alias in node.names:
          # `from alexnet_jax.x import y`: the module x.y where y is one, else x itself.
          target = f'{base}.{alias.name}'
          edges[name].add(target if target in modules else resolve(base))
    edges[name].discard(name)
  return edges


def _cycles(nodes, edges) -> list[list[str]]:
  """The strongly connected groups of more than one module (Tarjan's algorithm, iterative)."""
  index, low, on_stack, stack, groups = {}, {}, set(), [], []
  counter = 0
  for root in nodes:
    if root in index:
      continue
    work = [(root, iter(sorted(edges.get(root, ()))))]
    index[root] = low[root] = counter
    counter += 1
    stack.append(root)
    on_stack.add(root)
    while work:
      node, successors = work[-1]
      for successor in successors:
        if successor not in index:
          index[successor] = low[successor] = counter
          counter += 1
          stack.append(successor)
          on_stack.add(successor)
          work.append((successor, iter(sorted(edges.get(successor, ())))))
          break
        if successor in on_stack:
          low[node] = min(low[node], index[successor])
      else:
        work.pop()
        if work:
          parent = work[-1][0]
          low[parent] = min(low[parent], low[node])
        if low[node] == index[node]:
          group = []
          while True:
            member = stack.pop()
            on_stack.discard(member)
            group.append(member)
            if member == node:
              break
          if len(group) > 1:
            groups.append(sorted(group))
  return groups


def _cycle_path(group: list[str], edges) -> list[str]:
  """One import cycle through the group's first module, for the failure message."""
  members, start = set(group), group[0]
  paths = {start: [start]}
  frontier = [start]
  while frontier:
    following = []
    for node in frontier:
      for successor in sorted(edges.get(node, ())):
        if successor == start:
          return paths[node] + [start]
        if successor in members and successor not in paths:
          paths[successor] = paths[node] + [successor]
          following.append(successor)
    frontier = following
  return group


def test_the_cycle_finder_finds_cycles():
  edges = {'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': {'a'}, 'e': {'e'}}
  assert _cycles(['a', 'b', 'c', 'd', 'e'], edges) == [['a', 'b', 'c']]
  assert _cycle_path(['a', 'b', 'c'], edges) == ['a', 'b', 'c', 'a']


def test_no_import_cycles_among_the_package_modules():
  modules = _modules()
  edges = _import_graph(modules)
  # The graph is the package's: it sees the imports that matter.
  assert 'alexnet_jax.rundir.checkpoints' in edges['alexnet_jax.train']
  assert 'alexnet_jax.model.spec' in edges['alexnet_jax.model']  # An __init__'s own import.
  cycles = _cycles(list(modules), edges)
  assert not cycles, 'import cycles:\n' + '\n'.join(
      ' -> '.join(_cycle_path(group, edges)) for group in cycles)


def test_at_most_eight_top_level_modules():
  top = sorted(p.name for p in PACKAGE.glob('*.py') if p.name != '__init__.py')
  assert len(top) <= MAX_TOP_LEVEL_MODULES, (
      f'{len(top)} top-level modules in alexnet_jax/ (at most {MAX_TOP_LEVEL_MODULES}): {top}')


def test_configs_are_parsed_only_at_the_boundaries():
  for allowed in FROM_CONFIG_ALLOWED:  # No entry outlives its file.
    assert (PACKAGE / allowed).is_file(), f'alexnet_jax/{allowed} is in FROM_CONFIG_ALLOWED'
  offending = []
  for path in sorted(PACKAGE.rglob('*.py')):
    relative = path.relative_to(PACKAGE).as_posix()
    if '__pycache__' in path.parts or relative in FROM_CONFIG_ALLOWED:
      continue
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
      if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
          and node.func.attr == 'from_config'):
        offending.append(f'alexnet_jax/{relative}:{node.lineno}: {ast.unparse(node.func)}(...)')
  assert not offending, (
      'from_config called below the command-line boundaries (pass the parsed spec down, or '
      'add the file to FROM_CONFIG_ALLOWED if it is a boundary):\n' + '\n'.join(offending))
