"""One top-k error rule (losses.top_k_errors) for training's metrics and evaluation's
counts: ties count against the model, a row with a NaN or Inf is an error at every k.

Checked against a row-by-row NumPy count, and through the sharded training loss.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from alexnet_jax import evaluate, model, parallel
from alexnet_jax.model import losses

NAN, INF = float('nan'), float('inf')


def numpy_wrong(scores, labels, k):
  """Row by row: wrong if any score is non-finite, or if k or more other classes score at
  least as high as the true one."""
  wrong = []
  for row, label in zip(scores, labels):
    if not np.all(np.isfinite(row)):
      wrong.append(1.0)
      continue
    at_least_as_high = sum(1 for j, s in enumerate(row) if j != label and s >= row[label])
    wrong.append(float(at_least_as_high >= k))
  return np.array(wrong, np.float32)


# Seven classes, so that top-5 can miss. Label first, then the row; by hand, the top-1 /
# top-5 verdicts are in the comment.
HAND_ROWS = [
    (0, [5, 1, 1, 1, 1, 1, 1]),  # Right, right.
    (0, [5, 1, 1, NAN, 1, 1, 1]),  # A NaN elsewhere: wrong, wrong.
    (1, [0, INF, 0, 0, 0, 0, 0]),  # Inf at the label: wrong, wrong.
    (0, [2, 2, 0, 0, 0, 0, 0]),  # A tie for first: wrong, right.
    (0, [1, 1, 1, 1, 1, 0, 0]),  # Tied with four others: wrong, right.
    (0, [1, 1, 1, 1, 1, 1, 0]),  # Tied with five others: wrong, wrong.
    (6, [7, 6, 5, 4, 3, 2, 1]),  # Last of seven: wrong, wrong.
]


def test_top_k_errors_by_hand_and_against_numpy():
  labels = np.array([label for label, _ in HAND_ROWS])
  scores = np.array([row for _, row in HAND_ROWS], np.float32)
  got = np.asarray(losses.top_k_errors(jnp.asarray(scores), jnp.asarray(labels)))
  np.testing.assert_array_equal(got, [[0, 0], [1, 1], [1, 1], [1, 0], [1, 0], [1, 1], [1, 1]])
  rng = np.random.default_rng(0)
  scores = rng.integers(0, 4, size=(300, 10)).astype(np.float32)  # Many ties.
  scores[rng.random(scores.shape) < 0.01] = NAN
  scores[rng.random(scores.shape) < 0.005] = -INF
  labels = rng.integers(0, 10, size=300)
  got = np.asarray(losses.top_k_errors(jnp.asarray(scores), jnp.asarray(labels), (1, 3, 5)))
  for i, k in enumerate((1, 3, 5)):
    np.testing.assert_array_equal(got[:, i], numpy_wrong(scores, labels, k), err_msg=str(k))


def test_training_metrics_and_evaluation_count_alike():
  rng = np.random.default_rng(1)
  logits = rng.integers(0, 3, size=(64, 10)).astype(np.float32)
  logits[rng.random(logits.shape) < 0.02] = INF
  labels = rng.integers(0, 10, size=64)
  ce, top1, top5 = map(np.asarray, losses.cross_entropy_and_errors(jnp.asarray(logits),
                                                                     jnp.asarray(labels)))
  np.testing.assert_array_equal(top1, numpy_wrong(logits, labels, 1))
  np.testing.assert_array_equal(top5, numpy_wrong(logits, labels, 5))
  mask = rng.random(64) < 0.8
  counts = np.asarray(evaluate.error_counts(jnp.asarray(logits), jnp.asarray(labels),
                                            jnp.asarray(mask)))
  np.testing.assert_array_equal(counts, [top1[mask].sum(), top5[mask].sum(), mask.sum()])
  # The cross-entropy of the finite rows, against NumPy's log-softmax.
  finite = np.all(np.isfinite(logits), axis=-1)
  shifted = logits[finite] - logits[finite].max(-1, keepdims=True)
  expected = np.log(np.exp(shifted).sum(-1)) - shifted[np.arange(finite.sum()), labels[finite]]
  np.testing.assert_allclose(ce[finite], expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize('shape', [(1, 1), (2, 2)])
def test_sharded_training_loss_counts_ties_and_nan_rows_as_errors(case, make_mesh, shape):
  cfg, params, images, labels = case
  layout = parallel.Layout(make_mesh(*shape), model.Spec.from_config(cfg), batch_sizes=(4,))
  loss = jax.jit(layout.loss(4))
  put = lambda x: jax.device_put(x, layout.batch_sharding)  # noqa: E731
  rng = jax.device_put(jax.random.key(0), layout.replicated)
  fc8 = params['fc8']
  # A constant output (fc8 all zero): every class ties, so all 4 examples are wrong at
  # top-1 and at top-5 (the other 9 classes score as high).
  tied = {**params, 'fc8': {'kernel': jnp.zeros_like(fc8['kernel']),
                            'bias': jnp.zeros_like(fc8['bias'])}}
  value, errors = loss(layout.shard_params(tied), put(images), put(labels), rng)
  assert float(value) == pytest.approx(np.log(10), rel=1e-6)
  assert jax.tree.map(float, errors) == {'top1_error': 1.0, 'top5_error': 1.0}
  # One NaN logit per row (a diverged class): wrong, though no finite score beats the
  # label's (NaN compares false, which a bare rank would count as right).
  diverged = {**params, 'fc8': {'kernel': fc8['kernel'], 'bias': fc8['bias'].at[3].set(NAN)}}
  _, errors = loss(layout.shard_params(diverged), put(images), put(labels), rng)
  assert jax.tree.map(float, errors) == {'top1_error': 1.0, 'top5_error': 1.0}
