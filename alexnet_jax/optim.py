"""The paper's SGD update rule (Sec. 5) as an optax chain, and its learning-rate schedules.

Sec. 5 of the paper updates the weights w with velocity v as

  v <- momentum * v - weight_decay * lr * w - lr * g
  w <- w + v

so the learning rate is applied *inside* the velocity. `optax.sgd(lr, momentum)` scales
by the learning rate after the momentum trace instead, which gives a different step
whenever the learning rate changes (right after each drop it keeps moving with the old,
10x larger velocity for a while). `paper_sgd` is the paper's rule:

  add_decayed_weights -> masked(scale) on biases -> plateau scale -> -lr -> trace(momentum)

The plateau stage multiplies the step by a scale held in the optimizer state. It is
changed only on the host, between epochs, by `plateau_update` (Sec. 5: "divide the
learning rate by 10 when the validation error stopped improving"); it is in every
optimizer built here, so the optimizer state has the same structure for both schedules
and is saved with the checkpoint.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, NamedTuple, Union

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

Schedule = Union[float, Callable[[Any], Any]]
SCHEDULES = ('step', 'plateau')


class PlateauState(NamedTuple):
  """State of the plateau stage; float32/int32 scalars so it checkpoints like any array."""
  scale: jax.Array  # Multiplies every update; starts at 1, times `factor` per decay.
  best: jax.Array  # Lowest validation error seen (inf before the first evaluation).
  num_bad: jax.Array  # Evaluations since the last improvement (or the last decay).
  num_decays: jax.Array  # Decays so far.


# Hand-written, because optax's plateau tools do not fit Sec. 5's rule as run here.
# optax.contrib.reduce_on_plateau (0.2.8) changes its scale inside `update` from a `value`
# passed to every update call (the train step has none; this schedule moves once per
# validation evaluation, on the host); it rejects rtol = atol = 0, i.e. the default
# plateau_min_delta = 0 (any lower error is an improvement), and factor = 1; and it has no
# count of decays (max_decays, Sec. 5's "three times"), only a floor on the scale.
# optax.inject_hyperparams could hold the scale, but not best/num_bad/num_decays, which
# must be in the checkpoint beside it for an exact resume.
def plateau_scale() -> optax.GradientTransformation:
  """A stage multiplying updates by `PlateauState.scale`; only `plateau_update` changes it."""

  def init_fn(params):
    del params
    return PlateauState(
        scale=jnp.ones([], jnp.float32),
        best=jnp.full([], jnp.inf, jnp.float32),
        num_bad=jnp.zeros([], jnp.int32),
        num_decays=jnp.zeros([], jnp.int32))

  def update_fn(updates, state, params=None):
    del params
    updates = jax.tree.map(lambda u: u * state.scale.astype(u.dtype), updates)
    return updates, state

  return optax.GradientTransformation(init_fn, update_fn)


def _is_bias(path) -> bool:
  last = path[-1] if path else None
  return isinstance(last, jax.tree_util.DictKey) and last.key == 'bias'


def kernels_only(params) -> Any:
  """Decay mask: True for every leaf except those under a 'bias' key (original code)."""
  return jax.tree_util.tree_map_with_path(lambda p, _: not _is_bias(p), params)


def all_leaves(params) -> Any:
  """Decay mask: True everywhere (the paper's text decays every weight, biases included)."""
  return jax.tree.map(lambda _: True, params)


def biases_only(params) -> Any:
  """Mask: True for the leaves under a 'bias' key."""
  return jax.tree_util.tree_map_with_path(lambda p, _: _is_bias(p), params)


def _check(ok: bool, message: str) -> None:
  if not ok:
    raise ValueError(message)


def paper_sgd(learning_rate: Schedule,
              momentum: float = 0.9,
              weight_decay: float = 5e-4,
              decay_mask: Any = None,
              bias_lr_multiplier: float = 1.0) -> optax.GradientTransformation:
  """The paper's update rule (Sec. 5); the returned update is the new velocity v.

  Args:
    learning_rate: a float, or an optax schedule evaluated at the update count.
    momentum: the velocity's decay, in [0, 1).
    weight_decay: coefficient of w in the velocity (times the learning rate).
    decay_mask: pytree of bools, or callable(params) -> pytree of bools, saying which
      leaves are decayed. None: every leaf except those under a 'bias' key.
    bias_lr_multiplier: biases step with learning_rate * bias_lr_multiplier.
  """
  if not callable(learning_rate):
    _check(learning_rate > 0,
           f'learning_rate must be > 0, got {learning_rate}; set a positive optim.learning_rate.')
  _check(0 <= momentum < 1, f'momentum must be in [0, 1), got {momentum}; set optim.momentum.')
  _check(weight_decay >= 0,
         f'weight_decay must be >= 0, got {weight_decay}; set optim.weight_decay to 0 or more.')
  _check(bias_lr_multiplier > 0,
         f'bias_lr_multiplier must be > 0, got {bias_lr_multiplier}; set optim.bias_lr_multiplier.')
  if decay_mask is None:
    decay_mask = kernels_only
  return optax.chain(
      optax.add_decayed_weights(weight_decay, mask=decay_mask),
      # The original code's bias rate. Present even at 1.0 so that the state's structure
      # never depends on the config.
      optax.masked(optax.scale(bias_lr_multiplier), biases_only),
      plateau_scale(),
      # flip_sign: the velocity points down the gradient.
      optax.scale_by_learning_rate(learning_rate),
      # Learning rate before the trace: the paper's v includes eps (unlike optax.sgd).
      optax.trace(decay=momentum),
  )


@dataclasses.dataclass(frozen=True)
class OptimSpec:
  """`config.optim`, declared once and validated once (`optim_config()` is its defaults).
  Each default is the paper's (Sec. 5) unless its comment says otherwise."""
  learning_rate: float = 0.01  # Sec. 5: 0.01 for all layers.
  momentum: float = 0.9  # Sec. 5.
  weight_decay: float = 0.0005  # Sec. 5.
  decay_biases: bool = False  # Original code: no weight decay on biases.
  bias_lr_multiplier: float = 1.0  # Paper: one rate for all layers (original code: 2).
  # 'step': divide by 10 at `decay_epochs`; 'plateau': divide by 10 when the validation
  # error stops improving (Sec. 5's heuristic), at most `max_decays` times.
  schedule: str = 'step'
  decay_factor: float = 0.1  # Sec. 5: divided by 10.
  # Sec. 5's three drops, at the original run's epochs (its log; docs/training.md).
  decay_epochs: tuple[int, ...] = (25, 51, 79)
  max_decays: int = 3  # Sec. 5: "reduced three times".
  plateau_patience: int = 2  # Evaluations without improvement before a decay.
  plateau_min_delta: float = 0.0  # Improvement in top-1 error that counts.

  def __post_init__(self):
    """Raises ValueError, one line saying which field to change."""
    object.__setattr__(self, 'decay_epochs', tuple(self.decay_epochs))
    _check(self.learning_rate > 0, f'optim.learning_rate must be > 0, got {self.learning_rate}; '
           'set --config.optim.learning_rate.')
    _check(0 <= self.momentum < 1,
           f'optim.momentum must be in [0, 1), got {self.momentum}; set --config.optim.momentum.')
    _check(self.weight_decay >= 0, f'optim.weight_decay must be >= 0, got {self.weight_decay}; '
           'set --config.optim.weight_decay.')
    _check(self.bias_lr_multiplier > 0,
           f'optim.bias_lr_multiplier must be > 0, got {self.bias_lr_multiplier}; '
           'set --config.optim.bias_lr_multiplier.')
    _check(self.schedule in SCHEDULES, f"optim.schedule must be one of {SCHEDULES}, got "
           f"{self.schedule!r}; set --config.optim.schedule.")
    _check(0 < self.decay_factor <= 1,
           f'optim.decay_factor must be in (0, 1], got {self.decay_factor}; '
           'set --config.optim.decay_factor (0.1 divides by 10).')
    epochs = self.decay_epochs
    _check(all(e > 0 for e in epochs) and all(a < b for a, b in zip(epochs, epochs[1:])),
           f'optim.decay_epochs must be positive and strictly increasing, got {epochs}; '
           'set --config.optim.decay_epochs.')
    _check(self.max_decays >= 0, f'optim.max_decays must be >= 0, got {self.max_decays}; '
           'set --config.optim.max_decays.')
    _check(self.plateau_patience >= 1,
           f'optim.plateau_patience must be >= 1, got {self.plateau_patience}; '
           'set --config.optim.plateau_patience.')
    _check(self.plateau_min_delta >= 0,
           f'optim.plateau_min_delta must be >= 0, got {self.plateau_min_delta}; '
           'set --config.optim.plateau_min_delta.')

  @classmethod
  def from_config(cls, optim_cfg) -> 'OptimSpec':
    """From a `config.optim` ConfigDict (or a mapping); missing fields take the defaults."""
    if isinstance(optim_cfg, cls):
      return optim_cfg
    return cls(**{f.name: optim_cfg[f.name] for f in dataclasses.fields(cls) if f.name in optim_cfg})


def optim_config() -> ml_collections.ConfigDict:
  """The paper's update rule as a ConfigDict (`config.optim`): `OptimSpec`'s defaults."""
  return ml_collections.ConfigDict(dataclasses.asdict(OptimSpec()))


def learning_rate_schedule(spec: OptimSpec, steps_per_epoch: int) -> optax.Schedule:
  """The schedule on update counts: 'step' drops at decay_epochs, 'plateau' is constant."""
  _check(steps_per_epoch >= 1, f'steps_per_epoch must be >= 1, got {steps_per_epoch}.')
  if spec.schedule == 'plateau':
    return optax.constant_schedule(spec.learning_rate)
  # The update with count epoch * steps_per_epoch (first step of that 0-based epoch)
  # is the first one at the lower rate.
  return optax.piecewise_constant_schedule(
      spec.learning_rate, {int(e) * steps_per_epoch: spec.decay_factor for e in spec.decay_epochs})


class Optimizer(NamedTuple):
  """A run's optimizer, built once: the update rule and the schedule inside it."""
  tx: optax.GradientTransformation
  schedule: optax.Schedule


def make_optimizer(spec: OptimSpec, steps_per_epoch: int) -> Optimizer:
  """`paper_sgd` from config.optim, with its schedule; the plateau stage is present for
  both schedules."""
  schedule = learning_rate_schedule(spec, steps_per_epoch)
  return Optimizer(paper_sgd(
      schedule,
      momentum=spec.momentum,
      weight_decay=spec.weight_decay,
      decay_mask=all_leaves if spec.decay_biases else kernels_only,
      bias_lr_multiplier=spec.bias_lr_multiplier), schedule)


def _is_plateau(x) -> bool:
  return isinstance(x, PlateauState)


def plateau_state(opt_state) -> PlateauState:
  """The (single) PlateauState inside an optimizer state built by `paper_sgd`."""
  found = [x for x in jax.tree.leaves(opt_state, is_leaf=_is_plateau) if _is_plateau(x)]
  if len(found) != 1:
    raise ValueError(f'expected one PlateauState in the optimizer state, found {len(found)}; '
                     'build the optimizer with alexnet_jax.optim.paper_sgd/make_optimizer.')
  return found[0]


def _like(value, old):
  """`value` as an array placed like `old` (so a sharded opt_state stays sharded)."""
  new = np.asarray(value, dtype=old.dtype)
  if isinstance(old, jax.Array):
    return jax.device_put(new, old.sharding)
  return new


def plateau_update(opt_state,
                   val_error: float,
                   *,
                   factor: float = 0.1,
                   patience: int,
                   min_delta: float = 0.0,
                   max_decays: int) -> tuple[Any, bool]:
  """Host-side step of the plateau schedule, called once per validation evaluation.

  An evaluation improves if val_error < best - min_delta. After `patience` evaluations
  in a row without improvement the scale is multiplied by `factor` (at most `max_decays`
  times in all) and the count starts again. Every process must pass the same val_error.

  Returns:
    (new opt_state, whether the learning rate was decayed now).
  """
  old = plateau_state(opt_state)
  scale = float(np.asarray(old.scale))
  best = float(np.asarray(old.best))
  num_bad = int(np.asarray(old.num_bad))
  num_decays = int(np.asarray(old.num_decays))
  if math.isnan(float(val_error)):
    raise ValueError('plateau_update got a NaN validation error; check the evaluation.')
  # Rounded to the stored best's precision (float32) before comparing: a float64 0.8 is
  # below float32(0.8), so an equal error would count as an improvement every time.
  val_error = float(np.asarray(val_error, dtype=old.best.dtype))

  if val_error < best - min_delta:
    best, num_bad = val_error, 0
  else:
    num_bad += 1
  decayed = False
  if num_bad >= patience and num_decays < max_decays:
    scale *= factor
    num_decays += 1
    num_bad = 0
    decayed = True
  new = PlateauState(
      scale=_like(scale, old.scale),
      best=_like(best, old.best),
      num_bad=_like(num_bad, old.num_bad),
      num_decays=_like(num_decays, old.num_decays))
  new_opt_state = jax.tree.map(lambda x: new if _is_plateau(x) else x, opt_state,
                               is_leaf=_is_plateau)
  return new_opt_state, decayed


def after_evaluation(spec: OptimSpec, opt_state, val_error: float) -> tuple[Any, bool]:
  """`plateau_update` with config.optim's fields after a validation evaluation; a no-op
  (False) for schedule 'step'."""
  if spec.schedule != 'plateau':
    return opt_state, False
  return plateau_update(opt_state, val_error, factor=spec.decay_factor,
                        patience=spec.plateau_patience, min_delta=spec.plateau_min_delta,
                        max_decays=spec.max_decays)


def learning_rate_at(schedule: optax.Schedule, opt_state, step: int) -> float:
  """The learning rate the update with count `step` uses: schedule(step) * plateau scale."""
  scale = float(np.asarray(plateau_state(opt_state).scale))
  return float(schedule(step)) * scale
