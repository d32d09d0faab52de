"""alexnet_jax.optim against a NumPy transcription of the paper's rule (Sec. 5)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from alexnet_jax import optim
from configs import default

from tests.paper_rule import MOMENTUM, numpy_paper_rule, random_grads, run_optax, small_params


def _optimizer(cfg, steps_per_epoch: int) -> optim.Optimizer:
  """make_optimizer of a config.optim ConfigDict, parsed (and validated) by OptimSpec."""
  return optim.make_optimizer(optim.OptimSpec.from_config(cfg), steps_per_epoch)


def assert_trees_close(a, b, rtol=2e-5, atol=1e-6):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y),
                                                       rtol=rtol, atol=atol), a, b)


def test_matches_numpy_across_a_learning_rate_drop():
  params = small_params()
  grads = random_grads(params, 7)
  drop_at, lr, wd = 3, 0.1, 0.05  # Large wd so that decaying biases would show.
  schedule = optax.piecewise_constant_schedule(lr, {drop_at: 0.1})
  lrs = [lr if i < drop_at else lr * 0.1 for i in range(len(grads))]
  final, _, updates = run_optax(optim.paper_sgd(schedule, MOMENTUM, wd), params, grads)
  want_final, want_updates = numpy_paper_rule(params, grads, lrs, weight_decay=wd)
  assert_trees_close(final, want_final)
  for got, want in zip(updates, want_updates):
    assert_trees_close(got, want)
  # The mask matters: a rule that decays biases ends elsewhere.
  decayed_all, _ = numpy_paper_rule(params, grads, lrs, weight_decay=wd, decay_biases=True)
  assert not np.allclose(final['fc8']['bias'], decayed_all['fc8']['bias'], rtol=1e-4)
  # decay_biases=True through the config reaches the all-leaves mask.
  cfg = default.get_config().optim
  cfg.decay_biases, cfg.weight_decay, cfg.learning_rate = True, wd, lr
  cfg.decay_epochs = (drop_at,)
  final_cfg, _, _ = run_optax(_optimizer(cfg, steps_per_epoch=1).tx, params, grads)
  assert_trees_close(final_cfg, decayed_all)


def test_differs_from_optax_sgd_exactly_at_the_drop():
  params = small_params()
  grads = random_grads(params, 6)
  drop_at, a, b = 3, 0.1, 0.01
  schedule = optax.piecewise_constant_schedule(a, {drop_at: b / a})
  _, _, paper = run_optax(optim.paper_sgd(schedule, MOMENTUM, weight_decay=0.0), params, grads)
  _, _, sgd = run_optax(optax.sgd(schedule, momentum=MOMENTUM), params, grads)
  for i in range(drop_at):  # Constant rate: the two rules agree.
    assert_trees_close(paper[i], sgd[i])
  # optax.sgd: t_i = g_i + m t_{i-1}, update -lr_i t_i. Paper: v_i = m v_{i-1} - lr_i g_i
  # with v_{i-1} = -a t_{i-1}. At the drop, sgd - paper = m (a - b) t_{i-1}.
  trace = jax.tree.map(lambda g: np.zeros(g.shape), grads[0])
  for g in grads[:drop_at]:
    trace = jax.tree.map(lambda t, x: x + MOMENTUM * t, trace, g)
  predicted = jax.tree.map(lambda t: MOMENTUM * (a - b) * t, trace)
  difference = jax.tree.map(lambda s, p: np.asarray(s) - np.asarray(p), sgd[drop_at],
                            paper[drop_at])
  assert_trees_close(difference, predicted, rtol=1e-4, atol=1e-6)
  assert np.abs(predicted['fc8']['kernel']).max() > 1e-3  # Not a vacuous comparison.


def test_bias_lr_multiplier_doubles_first_bias_step():
  params = {'fc8': {'kernel': jnp.array([1.0, 2.0]), 'bias': jnp.array([3.0])}}
  grads = {'fc8': {'kernel': jnp.array([0.5, 0.5]), 'bias': jnp.array([1.0])}}
  for mult, want_bias in ((1.0, -0.1), (2.0, -0.2)):
    tx = optim.paper_sgd(0.1, MOMENTUM, weight_decay=0.01, bias_lr_multiplier=mult)
    updates, _ = tx.update(grads, tx.init(params), params)
    # Kernel: -lr (g + wd w) = -0.1 * (0.5 + 0.01 * [1, 2]); bias: not decayed.
    np.testing.assert_allclose(updates['fc8']['kernel'], [-0.051, -0.052], rtol=1e-6)
    np.testing.assert_allclose(updates['fc8']['bias'], [want_bias], rtol=1e-6)


def test_bias_lr_multiplier_over_several_steps():
  params = small_params()
  grads = random_grads(params, 4)
  tx = optim.paper_sgd(0.05, MOMENTUM, 1e-2, bias_lr_multiplier=2.0)
  final, _, _ = run_optax(tx, params, grads)
  want, _ = numpy_paper_rule(params, grads, [0.05] * 4, weight_decay=1e-2, bias_mult=2.0)
  assert_trees_close(final, want)


def test_step_schedule_at_epoch_boundaries():
  cfg = default.get_config().optim
  spe = 10
  tx, schedule = _optimizer(cfg, spe)
  params = small_params()
  opt_state = tx.init(params)
  expected = {0: 1e-2, 249: 1e-2, 250: 1e-3, 509: 1e-3, 510: 1e-4, 789: 1e-4, 790: 1e-5,
              900: 1e-5}
  for step, lr in expected.items():
    assert optim.learning_rate_at(schedule, opt_state, step) == pytest.approx(lr, rel=1e-6)
  # The update itself uses that rate: from zero velocity at count 250, v = -1e-3 (g + wd w).
  opt_state = optax.tree_utils.tree_set(opt_state, count=jnp.asarray(250, jnp.int32))
  grads = random_grads(params, 1)[0]
  updates, _ = tx.update(grads, opt_state, params)
  np.testing.assert_allclose(
      updates['fc8']['kernel'],
      -1e-3 * (grads['fc8']['kernel'] + cfg.weight_decay * params['fc8']['kernel']), rtol=1e-5)
  np.testing.assert_allclose(updates['fc8']['bias'], -1e-3 * grads['fc8']['bias'], rtol=1e-5)


def test_plateau_decays_after_patience_at_most_max_decays():
  cfg = default.get_config().optim
  cfg.schedule = 'plateau'
  cfg.plateau_patience, cfg.max_decays, cfg.plateau_min_delta = 2, 3, 0.01
  tx, schedule = _optimizer(cfg, steps_per_epoch=5)
  opt_state = tx.init(small_params())
  errors = [0.5, 0.4, 0.395, 0.41,  # 0.395 improves by < min_delta: bad -> decay 1.
            0.3, 0.35, 0.35,  # Decay 2.
            0.36, 0.2, 0.3, 0.3,  # Improvement resets the count; decay 3.
            0.4, 0.4, 0.4, 0.4, 0.4]  # No more decays.
  want_decays = [False, False, False, True,
                 False, False, True,
                 False, False, False, True,
                 False, False, False, False, False]
  got = []
  for e in errors:
    opt_state, decayed = optim.after_evaluation(optim.OptimSpec.from_config(cfg), opt_state, e)
    got.append(decayed)
  assert got == want_decays
  state = optim.plateau_state(opt_state)
  np.testing.assert_allclose(state.scale, 1e-3, rtol=1e-6)
  assert int(state.num_decays) == 3 and float(state.best) == pytest.approx(0.2)
  assert optim.learning_rate_at(schedule, opt_state, 1000) == pytest.approx(1e-5, rel=1e-6)
  # 'step' ignores validation errors.
  step_cfg = default.get_config().optim
  same, decayed = optim.after_evaluation(optim.OptimSpec.from_config(step_cfg), opt_state, 1.0)
  assert same is opt_state and not decayed


@pytest.mark.parametrize('error', [0.8, 0.1, 1 / 3])
def test_plateau_equal_errors_are_not_improvements(error):
  # float32(0.8) = 0.800000011920929 > 0.8: a float64 0.8 compared with the stored float32
  # best would "improve" every time, and the rate would never drop.
  cfg = default.get_config().optim
  cfg.schedule, cfg.plateau_patience, cfg.max_decays, cfg.plateau_min_delta = 'plateau', 3, 2, 0.0
  opt_state = _optimizer(cfg, steps_per_epoch=5).tx.init(small_params())
  got = []
  for _ in range(1 + 3):  # A first evaluation, then `patience` equal ones.
    opt_state, decayed = optim.after_evaluation(optim.OptimSpec.from_config(cfg), opt_state,
                                                error)
    got.append(decayed)
  assert got == [False, False, False, True]
  state = optim.plateau_state(opt_state)
  assert float(state.scale) == pytest.approx(cfg.decay_factor, rel=1e-6)
  assert float(state.best) == np.float32(error) and int(state.num_bad) == 0


def test_plateau_changes_the_learning_rate_of_the_update():
  cfg = default.get_config().optim
  cfg.schedule, cfg.learning_rate, cfg.plateau_patience = 'plateau', 0.1, 1
  tx, schedule = _optimizer(cfg, steps_per_epoch=2)
  params = small_params()
  grads = random_grads(params, 6)
  evals = {2: 0.5, 4: 0.6}  # Before update 4: one bad evaluation -> lr 0.1 -> 0.01.

  def between(i, opt_state):
    if i in evals:
      opt_state, _ = optim.after_evaluation(optim.OptimSpec.from_config(cfg), opt_state, evals[i])
    return opt_state

  final, opt_state, _ = run_optax(tx, params, grads, between)
  want, _ = numpy_paper_rule(params, grads, [0.1] * 4 + [0.01] * 2,
                             weight_decay=cfg.weight_decay)
  assert_trees_close(final, want)
  assert optim.learning_rate_at(schedule, opt_state, 6) == pytest.approx(0.01, rel=1e-6)


@pytest.mark.parametrize('field,value', [
    ('learning_rate', 0.0), ('learning_rate', -0.01), ('momentum', 1.0), ('momentum', -0.1),
    ('weight_decay', -1e-4), ('schedule', 'cosine'), ('decay_epochs', (25, 25, 79)),
    ('decay_epochs', (51, 25)), ('decay_factor', 0.0), ('plateau_patience', 0),
])
def test_bad_config_raises_one_line_value_error(field, value):
  cfg = default.get_config().optim
  cfg[field] = value
  with pytest.raises(ValueError) as info:
    optim.OptimSpec.from_config(cfg)  # Where optim.validate was: the one parse of config.optim.
  message = str(info.value)
  assert '\n' not in message and field in message


def test_paper_sgd_rejects_bad_arguments():
  with pytest.raises(ValueError, match='momentum'):
    optim.paper_sgd(0.01, momentum=1.5)
  with pytest.raises(ValueError, match='learning_rate'):
    optim.paper_sgd(-1.0)
  with pytest.raises(ValueError, match='weight_decay'):
    optim.paper_sgd(0.01, weight_decay=-1.0)
