"""Rigorous epsilon lower bounds from canary scores, with stated confidence.

Implements Steinke, Nasr, Jagielski, "Privacy Auditing with One (1) Training
Run" (NeurIPS 2023, arXiv:2305.08846). Each of m canaries is inserted
independently with probability 1/2; after training, the auditor guesses the
k+ highest-scoring canaries "in" and the k- lowest "out" (k+ and k- fixed
before looking at the scores) and counts correct guesses. If the training
is (epsilon, delta)-DP towards each canary, the number of correct guesses
out of r = k+ + k- is stochastically dominated by Binomial(r, e^eps / (1 +
e^eps)) up to a delta term (their main theorem), so `one_run_p_value` bounds
the probability of as many correct guesses; the lower bound at confidence
1 - beta is the largest epsilon whose p-value is still <= beta
(`one_run_epsilon`). The arithmetic is a numpy / scipy port of
jax-privacy's `jax_privacy/auditing.py` (`_one_run_p_value`,
`_epsilon_one_run`; google-deepmind/jax_privacy, Apache 2.0), which cannot
be installed next to TFF 0.87. Several (k+, k-) choices may be tried at
once: the bound then holds with Bonferroni's beta / (number of choices).

Also the classic alternative (Jagielski et al. 2020, "Auditing
Differentially Private Machine Learning"): Clopper-Pearson intervals on the
true and false positive rates at one threshold, chosen on a separate random
split of the canaries, never on the data it is evaluated on
(`split_threshold_lower_bound`). It assumes the canaries' scores are
independent given membership (true across separate runs, an approximation
within one run, where canaries share the model); Steinke et al.'s bound
needs no such assumption.
"""

import dataclasses
import math
from typing import Optional, Sequence

import numpy as np
from scipy import optimize
from scipy import special

from tff_dp import checks
from tff_dp.audit import arrays

# Default guesses, as fractions of m, each for k+ and for k- (k+ = k-).
DEFAULT_GUESS_FRACTIONS = (0.01, 0.025, 0.05, 0.1, 0.25)


def _at_least(count, trials: int, p: float):
  """P[Binomial(trials, p) >= count] (1 for count <= 0)."""
  count = np.asarray(count)
  return np.where(count <= 0, 1.0,
                  special.bdtrc(np.maximum(count - 1, 0), trials, p))


def _check_counts(canaries, guesses, correct) -> None:
  checks.check_int('canaries', canaries, minimum=1)
  checks.check_int('guesses', guesses, minimum=0)
  checks.check_int('correct', correct, minimum=0)
  if not correct <= guesses <= canaries:
    raise ValueError(f'need correct <= guesses <= canaries, got correct='
                     f'{correct}, guesses={guesses}, canaries={canaries}.')


def one_run_p_value(*, canaries: int, guesses: int, correct: int,
                    epsilon: float, delta: float) -> float:
  """Probability of >= `correct` right guesses under (epsilon, delta)-DP.

  Args:
    canaries: m, the number of canaries (each inserted with probability 1/2).
    guesses: r, the number of guesses made (the rest abstained).
    correct: v, how many of them were right.
    epsilon: The epsilon of the null hypothesis, >= 0.
    delta: The delta of the null hypothesis, in [0, 1].

  Returns:
    The p-value: beta_term + alpha * delta * 2m, capped at 1, where
    beta_term = P[Binomial(r, q) >= v] with q = e^eps / (1 + e^eps) and
    alpha = max over i in 1..v of P[v - i <= Binomial(r, q) < v] / i.
  """
  _check_counts(canaries, guesses, correct)
  epsilon = checks.check_real('epsilon', epsilon)
  delta = checks.check_real('delta', delta)
  if delta > 1:
    raise ValueError(f'delta must be in [0, 1], got {delta}.')
  q = special.expit(epsilon)
  tail = float(_at_least(correct, guesses, q))
  if delta == 0 or correct == 0:
    return min(tail, 1.0)
  i = np.arange(1, correct + 1)
  alpha = float(np.max((_at_least(correct - i, guesses, q) - tail) / i))
  return min(tail + alpha * delta * 2 * canaries, 1.0)


def one_run_epsilon(*,
                    canaries: int,
                    guesses: int,
                    correct: int,
                    delta: float,
                    beta: float,
                    start: float = 0.0) -> float:
  """Largest epsilon >= start whose p-value is <= beta (else `start`).

  The p-value grows with epsilon, so doubling brackets the crossing and
  Brent's method finds it to 1e-6, as jax-privacy does. It ends: at
  epsilon -> inf every guess is right with probability 1, p-value 1 > beta.
  `start` (the best bound so far) lets a choice that cannot beat it stop
  after one p-value, as jax-privacy's search does.
  """
  _check_counts(canaries, guesses, correct)
  beta = arrays.probability('beta', beta)
  excess = lambda eps: beta - one_run_p_value(canaries=canaries,
                                              guesses=guesses,
                                              correct=correct,
                                              epsilon=eps,
                                              delta=delta)
  if excess(start) <= 0:
    return start
  lower, upper = start, max(1.0, 2 * start)
  while excess(upper) > 0:
    lower, upper = upper, 2 * upper
  return optimize.brentq(excess, lower, upper, xtol=1e-6)


@dataclasses.dataclass(frozen=True)
class OneRunBound:
  """A Steinke-Nasr-Jagielski lower bound and the guesses that gave it.

  Attributes:
    epsilon: The lower bound: if the training is (eps', delta)-DP towards
      each canary, the bound exceeds eps' with probability <= beta.
    beta: One minus the confidence.
    delta: The delta the bound is for.
    canaries: m.
    k_plus: "In" guesses of the best choice.
    k_minus: "Out" guesses of the best choice.
    correct: Right guesses of the best choice.
    choices: How many (k+, k-) choices were tried (Bonferroni divisor).
  """
  epsilon: float
  beta: float
  delta: float
  canaries: int
  k_plus: int
  k_minus: int
  correct: int
  choices: int


def default_guesses(canaries: int) -> list[tuple[int, int]]:
  """(k+, k-) = (k, k) for k in DEFAULT_GUESS_FRACTIONS of m, deduplicated."""
  sizes = sorted({
      max(1, round(f * canaries))
      for f in DEFAULT_GUESS_FRACTIONS
      if 2 * max(1, round(f * canaries)) <= canaries
  })
  return [(k, k) for k in sizes] or [(1, 0)]


def one_run_lower_bound(
    scores: Sequence[float],
    inserted: Sequence[bool],
    *,
    delta: float,
    beta: float = 0.05,
    guesses: Optional[Sequence[tuple[int, int]]] = None) -> OneRunBound:
  """Steinke et al.'s epsilon lower bound from one run's canary scores.

  Args:
    scores: One score per canary, higher meaning "more likely inserted"
      (e.g. its cosine with the final model delta); >= 2 canaries.
    inserted: Whether each canary was inserted; each must have been chosen
      independently with probability 1/2 before training.
    delta: The delta of the DP claim being audited, in (0, 1).
    beta: One minus the confidence, in (0, 1).
    guesses: The (k+, k-) choices to try, fixed before seeing the scores;
      by default `default_guesses(m)`. Ties in scores are broken by index.

  Returns:
    The best bound over the choices, each at confidence 1 - beta / choices.

  Raises:
    ValueError: Bad scores, mask, delta, beta or guesses.
  """
  scores = arrays.finite_vector('scores', scores, min_size=2)
  m = scores.size
  inserted = arrays.mask('inserted', inserted, size=m)
  delta = arrays.probability('delta', delta)
  beta = arrays.probability('beta', beta)
  choices = default_guesses(m) if guesses is None else list(guesses)
  if not choices:
    raise ValueError('guesses must hold at least one (k_plus, k_minus).')
  order = np.argsort(-scores, kind='stable')
  in_sorted = inserted[order]
  best = None
  for k_plus, k_minus in choices:
    checks.check_int('k_plus', k_plus, minimum=0)
    checks.check_int('k_minus', k_minus, minimum=0)
    if not 0 < k_plus + k_minus <= m:
      raise ValueError(f'guesses must satisfy 0 < k_plus + k_minus <= {m}, '
                       f'got ({k_plus}, {k_minus}).')
    correct = int(in_sorted[:k_plus].sum() + (~in_sorted[m - k_minus:]).sum())
    eps = one_run_epsilon(canaries=m,
                          guesses=k_plus + k_minus,
                          correct=correct,
                          delta=delta,
                          beta=beta / len(choices),
                          start=best.epsilon if best else 0.0)
    if best is None or eps > best.epsilon:
      best = OneRunBound(eps, beta, delta, m, k_plus, k_minus, correct,
                         len(choices))
  return best


def clopper_pearson_upper(successes, trials: int, alpha: float):
  """One-sided upper 1 - alpha Clopper-Pearson bound on a success rate."""
  successes = np.asarray(successes)
  safe = np.minimum(successes, trials - 1)
  return np.where(successes >= trials, 1.0,
                  special.betaincinv(safe + 1, trials - safe, 1 - alpha))


def clopper_pearson_lower(successes, trials: int, alpha: float):
  """One-sided lower 1 - alpha Clopper-Pearson bound on a success rate."""
  return 1.0 - clopper_pearson_upper(trials - np.asarray(successes), trials,
                                     alpha)


def threshold_epsilon(tp: int, fp: int, positives: int, negatives: int, *,
                      delta: float, alpha: float) -> float:
  """max(0, log((TPR_lb - delta) / FPR_ub)) at one threshold.

  Both rates at one-sided confidence 1 - alpha / 2, so the bound holds with
  probability >= 1 - alpha (TPR <= e^eps FPR + delta under (eps, delta)-DP).
  """
  tpr = float(clopper_pearson_lower(tp, positives, alpha / 2))
  fpr = float(clopper_pearson_upper(fp, negatives, alpha / 2))
  if tpr <= delta:
    return 0.0
  return max(0.0, math.log(tpr - delta) - math.log(fpr))


def _best_threshold(scores, inserted, *, delta: float, alpha: float) -> float:
  """Threshold (guess "in" at score >= it) maximizing the CP bound."""
  best_eps, best_t = -1.0, math.inf
  positives, negatives = int(inserted.sum()), int((~inserted).sum())
  for t in np.unique(scores):
    tp = int((inserted & (scores >= t)).sum())
    fp = int((~inserted & (scores >= t)).sum())
    eps = threshold_epsilon(tp,
                            fp,
                            positives,
                            negatives,
                            delta=delta,
                            alpha=alpha)
    if eps > best_eps:
      best_eps, best_t = eps, float(t)
  return best_t


def split_threshold_lower_bound(scores: Sequence[float],
                                inserted: Sequence[bool],
                                *,
                                delta: float,
                                beta: float = 0.05,
                                seed: int = 0,
                                select_fraction: float = 0.5) -> float:
  """Clopper-Pearson epsilon bound at a threshold chosen on a split.

  A random `select_fraction` of the canaries (by `seed`) chooses the
  threshold; the others alone give the bound, at confidence 1 - beta under
  the independence assumption of the module docstring.

  Raises:
    ValueError: Bad arguments, or a part without inserted or left-out
      canaries.
  """
  scores = arrays.finite_vector('scores', scores, min_size=4)
  inserted = arrays.mask('inserted', inserted, size=scores.size)
  delta = arrays.probability('delta', delta)
  beta = arrays.probability('beta', beta)
  select_fraction = arrays.probability('select_fraction', select_fraction)
  permutation = np.random.default_rng(seed).permutation(scores.size)
  cut = int(round(select_fraction * scores.size))
  parts = (permutation[:cut], permutation[cut:])
  for part in parts:
    if inserted[part].all() or not inserted[part].any():
      raise ValueError('each split part needs inserted and left-out '
                       f'canaries; got a part of {part.size} with '
                       f'{int(inserted[part].sum())} inserted.')
  select, held = parts
  threshold = _best_threshold(scores[select],
                              inserted[select],
                              delta=delta,
                              alpha=beta)
  above = scores[held] >= threshold
  return threshold_epsilon(int((inserted[held] & above).sum()),
                           int((~inserted[held] & above).sum()),
                           int(inserted[held].sum()),
                           int((~inserted[held]).sum()),
                           delta=delta,
                           alpha=beta)
