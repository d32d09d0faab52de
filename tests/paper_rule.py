"""A NumPy transcription of the paper's update rule (Sec. 5), and the helpers that run an
optax transformation beside it: the independent reference of tests/test_optim.py and
tests/test_switches.py (a plain module, not a test module)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

MOMENTUM = 0.9


def small_params(seed=0):
  rng = np.random.default_rng(seed)
  shapes = {'conv1': {'kernel': (3, 3, 2, 4), 'bias': (4,)},
            'fc8': {'kernel': (5, 3), 'bias': (3,)}}
  return {layer: {name: rng.normal(size=shape).astype(np.float32)
                  for name, shape in leaves.items()}
          for layer, leaves in shapes.items()}


def random_grads(params, n, seed=1):
  rng = np.random.default_rng(seed)
  return [jax.tree.map(lambda p: rng.normal(size=p.shape).astype(np.float32), params)
          for _ in range(n)]


def numpy_paper_rule(params, grads, lrs, *, weight_decay, decay_biases=False, bias_mult=1.0):
  """The paper's v <- m v - wd lr w - lr g ; w <- w + v in float64, step by step."""
  w = {l: {n: x.astype(np.float64) for n, x in d.items()} for l, d in params.items()}
  v = {l: {n: np.zeros_like(x) for n, x in d.items()} for l, d in w.items()}
  updates = []
  for g, lr in zip(grads, lrs):
    step = {}
    for layer in w:
      step[layer] = {}
      for name in w[layer]:
        is_bias = name == 'bias'
        eps = lr * (bias_mult if is_bias else 1.0)
        wd = weight_decay if (decay_biases or not is_bias) else 0.0
        v[layer][name] = (MOMENTUM * v[layer][name] - wd * eps * w[layer][name]
                          - eps * g[layer][name])
        w[layer][name] = w[layer][name] + v[layer][name]
        step[layer][name] = v[layer][name].copy()
    updates.append(step)
  return w, updates


def run_optax(tx, params, grads, between=None):
  """Applies tx for every gradient (jitted); `between(i, opt_state)` may edit the state."""
  params = jax.tree.map(jnp.asarray, params)
  opt_state = tx.init(params)

  @jax.jit
  def step(params, opt_state, g):
    updates, opt_state = tx.update(g, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, updates

  updates = []
  for i, g in enumerate(grads):
    if between is not None:
      opt_state = between(i, opt_state)
    params, opt_state, u = step(params, opt_state, g)
    updates.append(u)
  return params, opt_state, updates
