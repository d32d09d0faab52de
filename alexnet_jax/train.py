"""Training the paper's way (Sec. 5, 6), then evaluating: `train_and_evaluate(run, workdir)`.

The train step is one jitted function over the run's `parallel.Layout`: the sharded
network's batch-mean softmax cross-entropy, its exact gradient, and the paper's update
rule (`optim.paper_sgd`); the old state is donated, and the step number is folded into
the rng so dropout differs per step yet a resumed run repeats an uninterrupted one.
Everything a run needs to continue (params, optimizer and schedule state, step, rng;
the data position is the step) is in the checkpoint. Evaluation (per epoch and at the
end) is `evaluate.evaluate_views`; `--mode=eval` is `evaluate.evaluate_checkpoint`.
"""

from __future__ import annotations

import functools
import json
import math
import signal
import threading

# The lock of a gs:// workdir (rundir.LeaseLock) writes with it. Imported here, before the
# input pipeline starts threads: CPython 3.11.7 can fail an import made while threads run.
from google.cloud import storage as _gcs  # noqa: F401  pylint: disable=unused-import
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from alexnet_jax import config as config_lib
from alexnet_jax import evaluate, metrics, model, optim, parallel, rundir
from alexnet_jax.data import checks, pipeline
from alexnet_jax.data.device_augment import DeviceAugment
from alexnet_jax.data.spec import VIEWS, DataSpec
from alexnet_jax.data.statistics import load_stats
from alexnet_jax.rundir import checkpoints

class TrainingDiverged(RuntimeError):
  """The loss or a parameter became NaN or Inf; the last good checkpoint is kept."""


def _init_function(seed: int, layout: parallel.Layout, tx: optax.GradientTransformation):
  """() -> the state at step 0: params, optimizer state, rng and step."""
  def init():
    root = jax.random.key(seed)
    params = model.init_params(jax.random.fold_in(root, 0), layout.spec)
    return {'params': params, 'opt_state': tx.init(params), 'rng': jax.random.fold_in(root, 1),
            'step': jnp.zeros([], jnp.int32)}
  return init


def state_shardings(layout: parallel.Layout, tx: optax.GradientTransformation, shapes: dict) -> dict:
  """The train state's shardings: params by the layout, every copy of the params tree in
  the optimizer state (momentum) like the params, the rest (schedule, rng, step) replicated.

  shapes: the state's structure (e.g. from `jax.eval_shape`).
  """
  replicated = layout.replicated
  opt_state = optax.tree_map_params(tx, lambda _, sharding: sharding, shapes['opt_state'],
                                    layout.param_shardings,
                                    transform_non_params=lambda _: replicated)
  return {'params': layout.param_shardings, 'opt_state': opt_state, 'rng': replicated,
          'step': replicated}


def abstract_state(seed: int, layout: parallel.Layout, tx: optax.GradientTransformation) -> dict:
  """The state's shapes, dtypes and shardings without creating it: what the train step
  is compiled for, on any devices, including compile-only ones (alexnet_jax.aot)."""
  shapes = jax.eval_shape(_init_function(seed, layout, tx))
  return jax.tree.map(lambda s, sharding: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding),
                      shapes, state_shardings(layout, tx, shapes))


def init_state(seed: int, layout: parallel.Layout, tx: optax.GradientTransformation) -> dict:
  """The state created already sharded over the mesh (`state_shardings`), from `seed`
  (config.seed)."""
  init = _init_function(seed, layout, tx)
  return jax.jit(init, out_shardings=state_shardings(layout, tx, jax.eval_shape(init)))()


def device_augment(spec: DataSpec, seed: int, stats=None) -> DeviceAugment | None:
  """Sec. 4.1 in the step where `spec` (resolved for the backend) says 'device', else None.

  stats: the mean image and lighting's eigen-decomposition (default: the run's, loaded per
  spec); their values are constants of the step, not part of its shape.
  """
  if not spec.augment_on_device:
    return None
  return DeviceAugment.from_spec(spec, load_stats(spec) if stats is None else stats, seed)


def make_train_step(layout: parallel.Layout, tx, batch_size: int, augment=None):
  """The jitted step on global batches of `batch_size`, with the layout's mapper and
  compiler options; the old state is donated."""
  return layout.jit(train_step_function(layout, tx, batch_size, augment), donate_argnums=(0,))


def train_step_function(layout: parallel.Layout, tx, batch_size: int, augment=None):
  """The step before jit: (state, images, labels) -> (new state, metrics).

  augment: a `data.device_augment.DeviceAugment` (config.data.augment_on='device'): the
  step then takes (state, uint8 stored images, labels, epoch, index) and makes the
  training inputs itself.
  """
  loss_fn = layout.loss(batch_size)

  def train_step(state, images, labels, *example_ids):
    if augment is not None:
      images = layout.per_example(augment)(images, *example_ids)
    rng = jax.random.fold_in(state['rng'], state['step'])
    (loss, errors), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state['params'], images, labels, rng)
    updates, opt_state = tx.update(grads, state['opt_state'], state['params'])
    params = optax.apply_updates(state['params'], updates)
    new_state = {'params': params, 'opt_state': opt_state, 'rng': state['rng'],
                 'step': state['step'] + 1}
    return new_state, {'loss': loss, **errors}

  return train_step


@jax.jit
def all_finite(tree) -> jax.Array:
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


class _StopFlags:
  """Turns SIGTERM (a pod's pre-emption notice), a failed background save and a lost
  workdir lock into flags the loop checks each step.

  In a multi-process run the notice may reach one host only, a save may fail on one host
  only (its disk), and only process 0 holds the lock, yet orbax saves are collective: every
  process must save, and at the same step, and stop at the same step. `agreed` gives the flags OR-ed over the
  processes. Each step it dispatches a tiny all-reduce of this process's flags and reads
  the one dispatched the step before, so all processes stop at the same step (one after
  the first seen) and the host stays one step ahead of the devices rather than waiting on
  each step. Every step, not every N: a pre-emption notice leaves tens of seconds, and
  the check costs no extra wait. A single process reads its own flags, with no device work.
  """

  def __init__(self):
    self.requested = False
    self._previous = None
    self._pending = None

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)

  def agreed(self, layout: parallel.Layout, save_failed: bool = False,
             lock_lost: bool = False) -> tuple[bool, bool, bool]:
    """(stop requested, a save failed, the lock was lost) on any process; call it at every
    step on every process."""
    if jax.process_count() == 1:
      return self.requested, save_failed, lock_lost
    # One row of flags per local device of the mesh, so the array spans every process.
    mesh = layout.mesh
    spread = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(parallel.AXES))
    local = sum(d.process_index == jax.process_index() for d in mesh.devices.flat)
    flags = jax.make_array_from_process_local_data(
        spread, np.tile(np.array([[self.requested, save_failed, lock_lost]]), (local, 1)))
    previous, self._pending = self._pending, _any_flag(flags, layout.replicated)
    if previous is None:
      return False, False, False
    stop, failed, lost = np.asarray(previous)
    return bool(stop), bool(failed), bool(lost)


@functools.partial(jax.jit, static_argnums=1)
def _any_flag(flags, out_sharding):
  return jax.lax.with_sharding_constraint(jnp.any(flags, axis=0), out_sharding)


def _meta(run: config_lib.RunSpec, step: int, steps_per_epoch: int) -> dict:
  return {'step': step, 'epoch': step / steps_per_epoch, 'config': run.config_json,
          'devices': f'{jax.device_count()} x {jax.devices()[0].device_kind}'}


def train_and_evaluate(run: config_lib.RunSpec, workdir: str) -> dict:
  """Trains `run` (a config parsed once: `config.RunSpec.from_config`) in `workdir`
  (resuming from its latest checkpoint) and evaluates.

  Returns a summary dict: the final step, the run's first and last logged training loss,
  and the eval results per view scheme (also written to DIR/eval.json). A workdir whose
  last step is trained and evaluated is left as it is (`finished` in the summary) unless
  `run.reevaluate`.
  """
  # Every check that can fail runs before the workdir is created or anything written.
  layout = parallel.Layout.for_run(run)
  info = checks.check_dataset(run.data, run.model, run.batch_size)
  rundir.check_workdir(workdir)
  rundir.check_resume(workdir, run.config_json, run.resume_overrides)
  checks.ensure_statistics(run.data)
  rundir.create_workdir(workdir)
  with rundir.hold(workdir, run.lock_lease_s) as lock:
    return _train_and_evaluate(run, workdir, layout, info, lock)


def _last_good(ckpt: checkpoints.Checkpoints) -> str:
  step = ckpt.latest_step()
  return f'The last good checkpoint (step {step}) is kept' if step is not None else (
      'No checkpoint had been saved yet')


def _finished(workdir: str, step: int | None, total_steps: int) -> dict | None:
  """DIR/eval.json if it evaluates `step`, the last checkpoint, and that is the last step."""
  path = rundir.RunDir(workdir).eval
  if step is None or step < total_steps or not path.exists():
    return None
  try:
    results = json.loads(path.read_text())
  except ValueError:
    return None  # Torn by a crash while it was written: evaluate again.
  return results if results.get('step') == step else None


def _train_and_evaluate(run: config_lib.RunSpec, workdir, layout, info, lock) -> dict:
  lead = jax.process_index() == 0
  steps_per_epoch = pipeline.steps_per_epoch(run.data, run.batch_size)
  total_steps = run.total_steps(steps_per_epoch)
  tx, schedule = optim.make_optimizer(run.optim, steps_per_epoch)  # The schedule, built once.
  checkpoints.remove_unfinished_saves(workdir)

  with jax.set_mesh(layout.mesh), checkpoints.Checkpoints(
      workdir, keep=run.keep_checkpoints, every=run.checkpoint_every_steps) as ckpt:
    done = _finished(workdir, ckpt.latest_step(), total_steps)
    if done and not run.reevaluate:
      logging.info('%s is finished: step %d is trained and evaluated (eval.json). Nothing to do; '
                   'raise --config.num_epochs or --config.max_steps to train on, or pass '
                   '--config.reevaluate=True to evaluate again.', workdir, done['step'])
      summary = {'step': done['step'], 'preempted': False, 'finished': True,
                 'eval': {v: done[v] for v in VIEWS if v in done},
                 'num_classes': run.model.num_classes}
      return {**summary, **_logged_losses(workdir, [])}

    writer = metrics.Writer(workdir, enabled=lead)
    state = init_state(run.seed, layout, tx)
    restored = ckpt.restore_latest(checkpoints.abstract_like(state))
    start = 0
    if restored is not None:
      state, _, start = restored
      logging.info('Resumed from %s at step %d.', ckpt.directory / str(start), start)
    writer.drop_after(start)  # Rows logged after the checkpoint, before a crash, come again.
    if lead:
      rundir.write_config(workdir, run.config_json)
    logging.info('%s: %d train / %d eval images, %d classes; %d steps of %d (%d per epoch) on a '
                 '%s mesh.', run.data.source, info.num_train, info.num_eval, info.num_classes,
                 max(total_steps - start, 0), run.batch_size, steps_per_epoch,
                 dict(layout.mesh.shape))

    data_spec = run.data.for_backend(jax.default_backend())
    augment = device_augment(data_spec, run.seed)
    train_step = make_train_step(layout, tx, run.batch_size, augment)
    batches = pipeline.device_batches(pipeline.train_batches(
        data_spec, global_batch_size=run.batch_size, seed=run.seed, start_step=start,
        process_index=jax.process_index(), process_count=jax.process_count()),
        layout, data_spec.prefetch_batches)
    throughput = metrics.Throughput(total_steps, run.batch_size)
    pending, losses = [], []
    step = start
    with batches, _StopFlags() as stop_flags:  # Closing `batches` stops its threads.
      while step < total_steps:
        batch = next(batches)
        state, step_metrics = train_step(state, batch['images'], batch['labels'],
                                         *[batch[k] for k in ('epoch', 'index') if k in batch])
        pending.append(step_metrics)
        step += 1
        if step == start + 1:
          throughput.mark(step)  # The first step compiled: rates count from here.

        if step % run.log_every_steps == 0 or step == total_steps:
          # The only host sync in the loop: the metrics of the steps since the last line.
          logged = jax.tree.map(lambda *xs: float(np.mean(xs)), *jax.device_get(pending))
          pending = []
          if not math.isfinite(logged['loss']) or not bool(all_finite(state['params'])):
            raise TrainingDiverged(
                f'The loss or a parameter became NaN/Inf by step {step}; stopped. '
                f'{_last_good(ckpt)}: lower --config.optim.learning_rate or try '
                '--config.model.init=caffe.')
          losses.append(logged['loss'])
          rate, eta = throughput.mark(step)
          lr = optim.learning_rate_at(schedule, state['opt_state'], step - 1)
          record = {'epoch': step / steps_per_epoch, **logged, 'learning_rate': lr}
          if rate is not None:
            record['images_per_s'] = rate
          writer.write(step, record)
          logging.info('step %d/%d epoch %.2f loss %.4f top-1 err %.3f top-5 err %.3f lr %.1e %s ETA %s',
                       step, total_steps, step / steps_per_epoch, logged['loss'],
                       logged['top1_error'], logged['top5_error'], lr,
                       f'{rate:,.0f} img/s' if rate else '(compiled)',
                       metrics.format_duration(eta) if eta is not None else '-')

        epoch_done = step % steps_per_epoch == 0
        if epoch_done and (step // steps_per_epoch) % run.eval_every_epochs == 0 and step < total_steps:
          val = evaluate.evaluate_views(state['params'], run, layout, ('center',), step,
                                        workdir, writer, final=False)['center']
          opt_state, decayed = optim.after_evaluation(run.optim, state['opt_state'],
                                                      val['top1_error'])
          state = {**state, 'opt_state': opt_state}
          if decayed:
            logging.info('Validation error stopped improving: learning rate divided by %g.',
                         1 / run.optim.decay_factor)
          throughput.mark(step)  # Evaluation time is not training throughput.

        # A background save that failed (here or on another process) stops the run here on
        # every process, in one line.
        stop, save_failed, lock_lost = stop_flags.agreed(
            layout, ckpt.failed(), bool(lock is not None and lock.lost))
        if save_failed:
          ckpt.raise_failure(elsewhere=True)
        if lock_lost:  # Another run owns the workdir now: write nothing more into it.
          raise rundir.WorkdirInUse(
              f'this run lost the lock of workdir {workdir} at step {step}: another run took '
              'it over (this one did not renew its lease in time); stopped without saving.')
        if step % run.checkpoint_every_steps == 0 or stop:
          if not bool(all_finite(state['params'])):
            raise TrainingDiverged(f'A parameter became NaN/Inf by step {step}; stopped without '
                                   f'saving. {_last_good(ckpt)}.')
          ckpt.save(step, state, _meta(run, step, steps_per_epoch), force=stop)
        if stop:
          logging.warning('SIGTERM: saved step %d to %s; run the same command to resume.', step,
                          ckpt.directory)
          return {'step': step, 'preempted': True}

    if ckpt.latest_step() != step:
      ckpt.save(step, state, _meta(run, step, steps_per_epoch), force=True)
    ckpt.wait_until_finished()
    summary = {'step': step, 'preempted': False, **_logged_losses(workdir, losses)}
    summary['eval'] = evaluate.evaluate_views(state['params'], run, layout, run.eval_views, step,
                                              workdir, writer)
    summary['num_classes'] = run.model.num_classes
    return summary


def _logged_losses(workdir: str, session: list[float]) -> dict:
  """The run's first and last logged loss: from metrics.jsonl, which holds the sessions
  before a resume too (process 0 writes it); else this session's."""
  run = (metrics.logged(workdir, 'loss') if jax.process_index() == 0 else []) or session
  return {'first_loss': run[0], 'last_loss': run[-1]} if run else {}
