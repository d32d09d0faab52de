"""What a batch of scores is worth: the softmax cross-entropy training minimises, and the
one top-k error rule that training's metrics and evaluation both count by.

The rule: the rank of the true class is the number of other classes scoring at least
as high, so ties count against the model (a constant output is never right); a row with
any NaN or Inf is an error at every k (a diverged model must not score as a perfect
one). `evaluate.error_counts` and `cross_entropy_and_errors` both use `top_k_errors`.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp


def top_k_errors(scores: jax.Array, labels: jax.Array, ks: Sequence[int] = (1, 5)) -> jax.Array:
  """[N, len(ks)] float32: 1 where the true class is not among the k best, per k.

  scores: [N, classes] logits or probabilities (any score that orders the classes the
  same way); labels: [N] integer classes.
  """
  num_classes = scores.shape[-1]
  # A one-hot product rather than a gather: elementwise, so it needs no resharding of
  # batch-sharded arrays. Exact for finite rows (the other terms are x * 0 = 0).
  true_score = jnp.sum(scores * jax.nn.one_hot(labels, num_classes, dtype=scores.dtype),
                       axis=-1, keepdims=True)
  # Ties count against the model: rank = classes scoring at least as high, less itself.
  rank = jnp.sum(scores >= true_score, axis=-1) - 1
  # NaN compares false with everything, which would give rank -1 (right); Inf may tie or win.
  rank = jnp.where(jnp.all(jnp.isfinite(scores), axis=-1), rank, num_classes)
  return jnp.stack([rank >= k for k in ks], axis=-1).astype(jnp.float32)


def cross_entropy_and_errors(logits: jax.Array, labels: jax.Array):
  """Per-example softmax cross-entropy and top-1 / top-5 error indicators ([N] each)."""
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32))
  ce = -jnp.take_along_axis(log_probs, labels[:, None], axis=-1)[:, 0]
  wrong = top_k_errors(logits, labels, (1, 5))
  return ce, wrong[:, 0], wrong[:, 1]
