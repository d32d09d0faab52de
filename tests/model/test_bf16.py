"""bfloat16 compute (model.dtype) against float32: one train step, and learning.

Tolerances: bfloat16 keeps 8 mantissa bits (relative rounding 2^-9 ~ 2e-3 per op); through
eight layers of sums over thousands of terms the logits differ by about 1%, so the loss
is checked to 2e-2 relative, and each layer's first update (learning rate times the
gradient plus weight decay) to its cosine similarity with the float32 update: a small
rotation, not just a similar size. The gradient gathers rounding on its way down, so the
bound is 0.98 for conv2-fc8 (measured 0.988-0.99999) and 0.9 for conv1, whose gradient
has been through every layer's bfloat16 backward pass (measured 0.93).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import alexnet_jax
from alexnet_jax import model, optim, parallel, train
from alexnet_jax.data import pipeline
from alexnet_jax.data.spec import DataSpec


def _step(config):
  layout = parallel.Layout(parallel.make_mesh(1, 1, devices=jax.devices()[:1]),
                           model.Spec.from_config(config.model))
  tx = optim.make_optimizer(optim.OptimSpec.from_config(config.optim), steps_per_epoch=6).tx
  state = train.init_state(config.seed, layout, tx)
  before = jax.tree.map(np.asarray, state['params'])
  images = 60.0 * jax.random.normal(jax.random.key(1), (4, 224, 224, 3), jnp.float32)
  images = jax.device_put(images, layout.batch_sharding)
  labels = jax.device_put(jnp.array([0, 1, 1, 0]), layout.batch_sharding)
  state, metrics = train.make_train_step(layout, tx, 4)(state, images, labels)
  return before, state, metrics


def test_bf16_step_stays_close_to_float32(folder, tiny_config):
  config = tiny_config(folder)
  config.model.dropout_rate = 0.0  # The same network in both runs.
  before, f32_state, f32_metrics = _step(config)
  config.model.dtype = 'bfloat16'
  _, bf16_state, bf16_metrics = _step(config)
  # Loss, parameters and optimizer state stay float32.
  assert bf16_metrics['loss'].dtype == jnp.float32
  for leaf in jax.tree.leaves((bf16_state['params'], bf16_state['opt_state'])):
    if jnp.issubdtype(leaf.dtype, jnp.floating):
      assert leaf.dtype == jnp.float32, leaf.dtype
  f32_loss, bf16_loss = float(f32_metrics['loss']), float(bf16_metrics['loss'])
  assert bf16_loss == pytest.approx(f32_loss, rel=2e-2)
  for name in model.LAYERS:
    for leaf in ('kernel', 'bias'):
      u32 = (np.asarray(f32_state['params'][name][leaf]) - before[name][leaf]).ravel()
      u16 = (np.asarray(bf16_state['params'][name][leaf]) - before[name][leaf]).ravel()
      assert np.linalg.norm(u32) > 0, (name, leaf)
      cosine = u32 @ u16 / (np.linalg.norm(u32) * np.linalg.norm(u16))
      assert cosine > (0.9 if name == 'conv1' else 0.98), (name, leaf, cosine)


def test_bf16_training_learns(folder, tmp_path, tiny_config, train_config):
  config = tiny_config(folder, **{'model.dtype': 'bfloat16', 'eval_views': ('center',)})
  workdir = str(tmp_path / 'run')
  summary = train_config(config, workdir)
  assert summary['step'] == 12
  assert summary['last_loss'] < summary['first_loss']
  # The checkpoint holds float32 params, and the evaluation agrees with a count in NumPy of
  # the one-device bfloat16 network's mistakes on the pipeline's centre crops.
  params = alexnet_jax.load_params(workdir)
  assert {x.dtype for x in jax.tree.leaves(params)} == {np.dtype(np.float32)}
  batch = next(pipeline.eval_batches(DataSpec.from_config(config.data), global_batch_size=14,
                                     views='center'))
  logits = np.asarray(alexnet_jax.apply(params, batch['images'][:, 0], config.model), np.float32)
  wrong = np.argmax(logits, -1) != batch['labels']
  assert summary['eval']['center']['top1_error'] == pytest.approx(np.mean(wrong), abs=1e-6)
  # Dark against bright: learnt, far from chance (7 of 14 wrong).
  assert np.sum(wrong) <= 1
