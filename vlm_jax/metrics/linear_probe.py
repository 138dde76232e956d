"""Linear probes: multinomial logistic regression on frozen features (CBT's protocol).

`fit` standardises the features with the training mean and standard deviation
(a constant feature gets std 1, so it stays 0), then minimises

  mean_i cross_entropy(softmax(x_i W + b), y_i) + l2 / 2 * ||W||^2

over W [D, C] and b [C] (the bias is not penalised) with optax's L-BFGS and
its zoom line search, full batch, from zeros. That is scikit-learn's
`LogisticRegression(C=1 / (l2 * n), solver='lbfgs')` (multinomial, intercept
unpenalised) on the same standardised features: its objective is C times the
summed losses plus ||W||^2 / 2, i.e. the one above times C * n.

A class absent from the training labels gets probability 0 and is never
predicted: with an unpenalised bias its optimum is a bias of -inf (no finite
minimiser), so the probe is fitted over the classes present only, as
scikit-learn does with the classes it has seen. A single training class gives
a constant probe. Biases are centred (sum 0): softmax is invariant to a shift
of them all, and the penalty fixes W but not b.

JAX here, unlike the NumPy of the other metrics, for optax's L-BFGS. It runs
in float64 (`jax.enable_x64`) on the CPU, whatever the default device (TPUs
lack float64). Measured on 1000 x 32 features, 6 classes, l2 = 1e-4 (the
test's case): float64 run to a gradient norm of 1e-8 ends 5e-6 from
scikit-learn's coefficients (whose own stop is the limit there); float32 got
to 9e-6, but its mean gradient over n examples carries rounding near 1e-7 of
its terms, the order of TOLERANCE, so the stopping test would depend on n.
"""

import dataclasses
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

# L-BFGS stops at this gradient L2 norm (scikit-learn's lbfgs default gtol is
# 1e-4, on the max-abs of the same gradient) or after MAX_ITERATIONS steps.
TOLERANCE = 1e-8
MAX_ITERATIONS = 2000


@dataclasses.dataclass(frozen=True)
class Probe:
  """A fitted probe.

  Attributes:
    mean: [D] training feature mean.
    std: [D] training feature std (1 where it was 0).
    weights: [D, C_seen] on the standardised features.
    bias: [C_seen], summing to 0.
    classes: [C_seen] int64, the class index of each column, ascending.
    num_classes: C, the size of the label space.
    iterations: L-BFGS steps taken.
    gradient_norm: the objective's gradient L2 norm at the end.
    converged: gradient_norm <= TOLERANCE.
  """
  mean: np.ndarray
  std: np.ndarray
  weights: np.ndarray
  bias: np.ndarray
  classes: np.ndarray
  num_classes: int
  iterations: int
  gradient_norm: float
  converged: bool

  def logits(self, features: np.ndarray) -> np.ndarray:
    """[n, C_seen] float64 logits of features [n, D]."""
    x = (np.asarray(features, np.float64) - self.mean) / self.std
    return x @ self.weights + self.bias

  def predict_proba(self, features: np.ndarray) -> np.ndarray:
    """[n, C] float64 class probabilities of features [n, D]; 0 for unseen classes."""
    logits = self.logits(features)
    logits -= logits.max(axis=1, keepdims=True)
    seen = np.exp(logits)
    seen /= seen.sum(axis=1, keepdims=True)
    out = np.zeros((len(seen), self.num_classes))
    out[:, self.classes] = seen
    return out

  def predict(self, features: np.ndarray) -> np.ndarray:
    """[n] int64 most probable class of features [n, D] (a tie goes to the lower index)."""
    return self.classes[self.logits(features).argmax(axis=1)]


@dataclasses.dataclass(frozen=True)
class Selection:
  """select_l2's choice.

  Attributes:
    l2: the chosen strength.
    probe: the probe fitted on the training set with it.
    dev_accuracy: {l2: dev accuracy} for every candidate.
  """
  l2: float
  probe: Probe
  dev_accuracy: dict[float, float]


def standardisation(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(mean [D], std [D]) of features [n, D], float64; a zero std becomes 1."""
  x = np.asarray(features, np.float64)
  std = x.std(axis=0)
  return x.mean(axis=0), np.where(std > 0, std, 1.0)


def objective(params: tuple[jax.Array, jax.Array], features: jax.Array, labels: jax.Array,
              l2: jax.Array) -> jax.Array:
  """Mean cross-entropy + l2 / 2 * ||W||^2.

  Args:
    params: (W [D, C], b [C]).
    features: [n, D].
    labels: [n] int column indices in [0, C).
    l2: scalar penalty strength.
  """
  weights, bias = params
  logits = features @ weights + bias
  label_logits = jnp.take_along_axis(logits, labels[:, None], axis=1)[:, 0]
  cross_entropy = jnp.mean(jax.nn.logsumexp(logits, axis=1) - label_logits)
  return cross_entropy + 0.5 * l2 * jnp.sum(weights ** 2)


@functools.partial(jax.jit, static_argnames=('num_columns',))
def _minimise(features, labels, l2, num_columns):
  """L-BFGS from zeros until the gradient norm <= TOLERANCE; (params, steps, grad norm)."""
  dtype = features.dtype
  params = (jnp.zeros((features.shape[1], num_columns), dtype), jnp.zeros(num_columns, dtype))
  value_fn = functools.partial(objective, features=features, labels=labels, l2=l2)
  optimizer = optax.lbfgs()
  # Reuses the value and gradient the line search computed at the accepted point.
  value_and_grad = optax.value_and_grad_from_state(value_fn)

  def step(carry):
    params, state = carry
    value, grad = value_and_grad(params, state=state)
    updates, state = optimizer.update(grad, state, params, value=value, grad=grad,
                                      value_fn=value_fn)
    return optax.apply_updates(params, updates), state

  def going(carry):
    _, state = carry
    count = optax.tree_utils.tree_get(state, 'count')
    norm = optax.tree_utils.tree_norm(optax.tree_utils.tree_get(state, 'grad'))
    return (count == 0) | ((count < MAX_ITERATIONS) & (norm > TOLERANCE))

  params, state = jax.lax.while_loop(going, step, (params, optimizer.init(params)))
  norm = optax.tree_utils.tree_norm(jax.grad(value_fn)(params))
  return params, optax.tree_utils.tree_get(state, 'count'), norm


def fit(features: np.ndarray, labels: np.ndarray, num_classes: int, l2: float) -> Probe:
  """Fits a probe (see the module docstring for the objective).

  Args:
    features: [n, D] training features, n >= 1.
    labels: [n] int class indices in [0, num_classes).
    num_classes: C.
    l2: penalty strength >= 0 (scikit-learn's C = 1 / (l2 * n)).

  Returns:
    The Probe.
  """
  features, labels = np.asarray(features), np.asarray(labels)
  if features.ndim != 2 or labels.shape != features.shape[:1] or not len(labels):
    raise ValueError(f'features {features.shape} and labels {labels.shape}: expected [n >= 1, D] '
                     'and [n]')
  if labels.min() < 0 or labels.max() >= num_classes:
    raise ValueError(f'labels outside [0, {num_classes})')
  if not l2 >= 0:
    raise ValueError(f'l2 = {l2}; expected >= 0')
  mean, std = standardisation(features)
  classes, columns = np.unique(labels, return_inverse=True)
  if len(classes) == 1:
    return Probe(mean, std, np.zeros((features.shape[1], 1)), np.zeros(1), classes,
                 num_classes, 0, 0.0, True)
  with jax.enable_x64(True), jax.default_device(jax.devices('cpu')[0]):
    (weights, bias), steps, norm = _minimise(
        jnp.asarray((features - mean) / std, jnp.float64), jnp.asarray(columns, jnp.int32),
        jnp.float64(l2), num_columns=len(classes))
    weights, bias, steps, norm = jax.device_get((weights, bias, steps, norm))
  return Probe(mean, std, np.asarray(weights), np.asarray(bias - bias.mean()), classes,
               num_classes, int(steps), float(norm), bool(norm <= TOLERANCE))


def accuracy(probe: Probe, features: np.ndarray, labels: np.ndarray) -> float:
  """Top-1 accuracy of `probe` on features [n, D], labels [n], n >= 1."""
  return float(np.mean(probe.predict(features) == np.asarray(labels)))


def select_l2(train_features: np.ndarray, train_labels: np.ndarray, dev_features: np.ndarray,
              dev_labels: np.ndarray, num_classes: int, grid: Sequence[float]) -> Selection:
  """The l2 of `grid` whose training-set probe is most accurate on the dev set.

  Ties go to the larger l2 (the simpler probe). The test set plays no part.

  Args:
    train_features: [n, D]; train_labels: [n] in [0, num_classes).
    dev_features: [m, D]; dev_labels: [m], m >= 1.
    num_classes: C.
    grid: candidate strengths, at least one.
  """
  if not len(grid):
    raise ValueError('an empty l2 grid')
  if not len(dev_labels):
    raise ValueError('no dev examples to choose l2 on')
  probes, scores = {}, {}
  for l2 in sorted(set(float(g) for g in grid), reverse=True):
    probes[l2] = fit(train_features, train_labels, num_classes, l2)
    scores[l2] = accuracy(probes[l2], dev_features, dev_labels)
  # max() keeps the first of equal scores, and the grid runs from the largest l2 down.
  best = max(scores, key=scores.get)
  return Selection(best, probes[best], dict(sorted(scores.items())))
