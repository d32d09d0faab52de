"""Benchmarks that print figures: `python -m alexnet_jax.bench --mode=MODE` (default step).

step:  the jitted train step as training runs it (default config, synthetic input on the
       devices): compile time, median step time, images/s, FLOPs and FLOP/s beside a
       large float32 matmul's FLOP/s. --xla_defaults adds the same step compiled with
       XLA's default options (alexnet_jax.parallel.compiler says what ours change), alternating
       step by step. --torch adds PyTorch eager's step in each of its formulations
       (torch_reference: 'grouped' and 'split_columns'; the faster of the two in the same
       run is the yardstick), same process.
input: the training input pipeline over generated 500x375 and 256x256 JPEGs.
stores: per core, on generated 500x375 JPEGs: the stats pass, prepare (jpeg, raw), and the
       training feed from each store with augment_on='host' and 'device'.
decode: the stored 256x256 image of generated 500x375 to 2400x1632 JPEGs, decoded at full
       size and with libjpeg's DCT scaling (data.decode.decode_at_least): speed and pixels.
pipeline: the train step fed by that pipeline (generated 256x256 JPEGs, a prepared copy),
       alternating step by step with the same step on synthetic input of the same form,
       for --augment_on=host, device or both (default).

  python -m alexnet_jax.bench --mode=step --batch_size=32 --steps=10 --torch --json=step.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys


def _parse(argv):
  parser = argparse.ArgumentParser(prog='python -m alexnet_jax.bench', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--mode', choices=('step', 'input', 'stores', 'pipeline', 'decode', 'all'), default='step')
  parser.add_argument('--batch_size', type=int, default=32)
  parser.add_argument('--steps', type=int, default=10, help='timed steps (after 2 warm-up)')
  parser.add_argument('--mesh_data', type=int, default=1)
  parser.add_argument('--mesh_model', type=int, default=1)
  parser.add_argument('--dtype', choices=('float32', 'bfloat16'), default='float32')
  parser.add_argument('--matmul_n', type=int, default=4096, help='size of the yardstick matmul')
  parser.add_argument('--xla_defaults', action='store_true',
                      help="also time the step compiled with XLA's default options, alternating")
  parser.add_argument('--torch', action='store_true',
                      help='also time the PyTorch eager reference (needs torch)')
  parser.add_argument('--augment_on', choices=('host', 'device', 'both'), default='both',
                      help="--mode=pipeline: where Sec. 4.1's augmentation runs")
  parser.add_argument('--input_images', type=int, default=256, help='JPEGs generated per size')
  parser.add_argument('--input_batches', type=int, default=20)
  parser.add_argument('--input_warmup', type=int, default=3)
  parser.add_argument('--json', default=None, help='write every figure to this file')
  parser.add_argument('--dry_run', action='store_true',
                      help='check the arguments and the layout on these devices, then exit')
  return parser.parse_args(argv)


def _run_spec(args):
  """The default config with the flags' batch, dtype and mesh, parsed once (the boundary)."""
  from alexnet_jax import config as configs_lib
  config = configs_lib.default_config()
  config.batch_size = args.batch_size
  config.model.dtype = args.dtype
  config.mesh.data = args.mesh_data
  config.mesh.model = args.mesh_model
  return configs_lib.RunSpec.from_config(config)


def _fmt_flops(x):
  return 'n/a' if x is None else f'{x / 1e9:,.1f} G'


def _print_step(r, torch_r):
  rows = [
      ('device', f"{r['device_kind']} ({r['platform']}, {r['num_devices']} device(s))"),
      ('jax', r['jax_version']),
      ('batch / mesh / dtype', f"{r['batch_size']} / data={r['mesh']['data']} "
                               f"model={r['mesh']['model']} / {r['dtype']}"),
      ('compiler options', str(r['compiler_options'] or "XLA's defaults")),
      ('lower + compile', f"{r['lower_s']:.2f} s + {r['compile_s']:.2f} s"),
      (f"step median of {r['steps']}", f"{r['step_median_s'] * 1e3:,.1f} ms "
                                       f"(min {r['step_min_s'] * 1e3:,.1f}, max {r['step_max_s'] * 1e3:,.1f})"),
      ('JAX images/s', f"{r['images_per_s']:.1f}"),
  ]
  if 'xla_defaults' in r:
    d = r['xla_defaults']
    rows += [("with XLA's default options", f"{d['step_median_s'] * 1e3:,.1f} ms = "
                                            f"{d['images_per_s']:.1f} images/s (compile "
                                            f"{d['compile_s']:.2f} s), same run, alternating")]
  rows += [
      ('forward GFLOPs / image', f"{r['forward_gflops_per_image']:.3f}"),
      ('step FLOPs (analytic, XLA)', f"{_fmt_flops(r['step_flops_analytic'])}, "
                                     f"{_fmt_flops(r['step_flops_xla'])}"),
      ('achieved FLOP/s', _fmt_flops(r['achieved_flops_per_s']) + 'FLOP/s'),
      (f"matmul {r['matmul_n']}^2 f32 FLOP/s", _fmt_flops(r['matmul_flops_per_s']) + 'FLOP/s'),
      ('achieved / matmul', f"{r['achieved_over_matmul']:.2f}"),
  ]
  for t in torch_r or ():  # One row set per PyTorch formulation (torch_reference).
    name = f"PyTorch {t['formulation']}"
    rows += [
        (f"{name} step median",
         f"{t['step_median_s'] * 1e3:,.1f} ms (min {t['step_min_s'] * 1e3:,.1f}, "
         f"max {t['step_max_s'] * 1e3:,.1f}), torch {t['torch_version']}, "
         f"{t['torch_threads']} threads"),
        (f'{name} images/s', f"{t['images_per_s']:.1f}"),
        (f'JAX / {name}', f"{r['images_per_s'] / t['images_per_s']:.2f}x"),
    ]
  width = max(len(k) for k, _ in rows)
  print('\n== train step ==')
  for k, v in rows:
    print(f'{k:<{width}}  {v}')
  print('per-layer forward GMACs / image: ' + ', '.join(
      f'{k} {v / 1e9:.3f}' for k, v in r['forward_macs_per_image'].items()))


def _run_input(run_spec, args) -> list:
  from alexnet_jax.bench.input import run
  results = []
  print('\n== input pipeline ==')
  for jpeg_size in ((500, 375), (256, 256)):
    r = run(run_spec, jpeg_size=jpeg_size, num_images=args.input_images,
            batches=args.input_batches, warmup=args.input_warmup)
    print(f'{jpeg_size[0]}x{jpeg_size[1]} JPEGs: ' + ', '.join(
        f'{k}={v:.1f}' if isinstance(v, float) else f'{k}={v}' for k, v in r.items()))
    results.append(r)
  return results


def main(argv=None) -> int:
  args = _parse(sys.argv[1:] if argv is None else argv)
  import jax
  devices_needed = args.mesh_data * args.mesh_model
  if devices_needed > 1 and jax.default_backend() == 'cpu' and len(jax.devices()) < devices_needed:
    print(f'A {args.mesh_data}x{args.mesh_model} mesh needs {devices_needed} devices; on CPU run with '
          f'XLA_FLAGS=--xla_force_host_platform_device_count={devices_needed}.')
    return 1
  run_spec = _run_spec(args)
  if args.dry_run:
    from alexnet_jax import parallel
    layout = parallel.Layout.for_run(run_spec, batch_sizes=(args.batch_size,))
    print(f'dry run: --mode={args.mode}, batch {args.batch_size}, {layout}; nothing timed.')
    return 0
  out = {'timestamp': datetime.datetime.now(datetime.timezone.utc).isoformat(),
         'jax_version': jax.__version__, 'device_kind': jax.devices()[0].device_kind,
         'batch_size': args.batch_size,
         'mesh': {'data': args.mesh_data, 'model': args.mesh_model}, 'dtype': args.dtype}

  from alexnet_jax import parallel
  layout = parallel.Layout.for_run(run_spec, batch_sizes=(args.batch_size,))
  if args.mode in ('step', 'all'):
    from alexnet_jax.bench import step
    out['step'] = step.run(run_spec, layout, batch_size=args.batch_size, steps=args.steps,
                           matmul_n=args.matmul_n, xla_defaults=args.xla_defaults)
    torch_r = None
    if args.torch:
      try:
        from alexnet_jax.bench import torch_reference
      except ImportError:
        print('--torch: PyTorch is not installed (pip install torch); skipping the comparison.')
      else:
        # Every formulation of the same computation; the fastest is the yardstick.
        torch_r = out['torch'] = [
            torch_reference.run(run_spec, batch_size=args.batch_size, steps=args.steps,
                                formulation=f) for f in torch_reference.FORMULATIONS]
        fastest = max(t['images_per_s'] for t in torch_r)
        out['jax_over_fastest_torch'] = out['step']['images_per_s'] / fastest
    _print_step(out['step'], torch_r)

  if args.mode in ('pipeline', 'all'):
    from alexnet_jax.bench import step
    print('\n== train step fed by the input pipeline, alternating with synthetic input ==')
    out['pipeline'] = []
    for where in (('host', 'device') if args.augment_on == 'both' else (args.augment_on,)):
      p = step.run_pipeline(run_spec, layout, batch_size=args.batch_size, steps=args.steps,
                            augment_on=where, num_images=args.input_images)
      out['pipeline'].append(p)
      print(f"augment_on={where}: fed {p['images_per_s']:.1f} images/s, synthetic "
            f"{p['synthetic_images_per_s']:.1f} images/s (medians of {p['steps']} steps each): "
            f"fed/synthetic = {p['fed_over_synthetic']:.3f}; {p['source']}")

  if args.mode in ('input', 'all'):
    out['input'] = _run_input(run_spec, args)

  if args.mode in ('stores', 'all'):
    from alexnet_jax.bench.input import run_stores
    out['stores'] = run_stores(run_spec, num_images=args.input_images, batches=args.input_batches,
                               warmup=args.input_warmup)

  if args.mode in ('decode', 'all'):
    from alexnet_jax.bench.input import run_decode
    out['decode'] = run_decode()

  if args.json:
    with open(args.json, 'w') as f:
      json.dump(out, f, indent=2, default=str)
    print(f'\nwrote {args.json}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
