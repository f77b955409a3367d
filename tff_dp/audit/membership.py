"""Loss-threshold membership inference on users: AUC, advantage, epsilon bound.

Implements the loss-threshold attack of Yeom, Giacomelli, Fredrikson, Jha,
"Privacy Risk in Machine Learning: Analyzing the Connection to Overfitting"
(IEEE CSF 2018) at the user level: members are the training clients,
non-members the held-out clients, and a client's score is the final model's
loss on its data (lower: more likely a member). Reported: the AUC of the
attack (scikit-learn's `roc_auc_score`), Yeom et al.'s membership advantage
max over thresholds of TPR - FPR, and an epsilon lower bound corrected for
the thresholds tried: at every threshold, (epsilon, delta)-DP implies
TPR <= e^eps FPR + delta and TNR <= e^eps FNR + delta, bounded with one-sided
Clopper-Pearson intervals at 1 - beta / (2 * thresholds) each (Bonferroni over
both rates of every threshold; as jax-privacy's `Bonferroni` strategy, the
thresholds are the distinct scores). Like the split bound of
`tff_dp.audit.lower_bound`, the intervals assume clients' losses are
independent given membership.

The inputs are private client data: the program releases these results only
under nonprivate/ (issue 16); this module only computes them.
"""

import dataclasses
from typing import Sequence

import numpy as np
from sklearn import metrics

from tff_dp.audit import arrays
from tff_dp.audit import lower_bound


@dataclasses.dataclass(frozen=True)
class MembershipAudit:
  """What the loss-threshold attack achieved on the final model.

  Attributes:
    auc: Area under the ROC curve of the score -loss (0.5: chance).
    advantage: max over thresholds of TPR - FPR (Yeom et al.), in [0, 1].
    advantage_threshold: The loss threshold reaching it (member iff loss <=).
    epsilon_lower_bound: If the model is (eps', delta)-DP towards users,
      this exceeds eps' with probability <= beta (independence assumed).
    thresholds: How many thresholds were tried (the Bonferroni divisor / 2).
    members: Number of member losses.
    non_members: Number of non-member losses.
    delta: The delta of the bound.
    beta: One minus the confidence of the bound.
  """
  auc: float
  advantage: float
  advantage_threshold: float
  epsilon_lower_bound: float
  thresholds: int
  members: int
  non_members: int
  delta: float
  beta: float


def _bound(tp, fp, members: int, non_members: int, *, delta: float,
           alpha: float) -> float:
  """Largest eps any threshold's intervals (each at 1 - alpha) refute."""
  tpr_low = lower_bound.clopper_pearson_lower(tp, members, alpha)
  fpr_high = lower_bound.clopper_pearson_upper(fp, non_members, alpha)
  with np.errstate(divide='ignore', invalid='ignore'):
    forward = np.log(tpr_low - delta) - np.log(fpr_high)
    # TNR = 1 - FPR and FNR = 1 - TPR: the same two intervals.
    backward = np.log(1 - fpr_high - delta) - np.log(1 - tpr_low)
  candidates = np.concatenate([forward, backward])
  # nan or -inf where an interval is too wide to refute anything.
  return float(np.max(candidates[np.isfinite(candidates)], initial=0.0))


def loss_threshold_audit(member_losses: Sequence[float],
                         non_member_losses: Sequence[float],
                         *,
                         delta: float,
                         beta: float = 0.05) -> MembershipAudit:
  """The loss-threshold attack's AUC, advantage and epsilon lower bound.

  Args:
    member_losses: Final-model loss of each training client (>= 1).
    non_member_losses: Final-model loss of each held-out client (>= 1).
    delta: The delta of the DP claim the bound is against, in (0, 1).
    beta: One minus the confidence of the bound, in (0, 1).

  Returns:
    The audit (see `MembershipAudit`).

  Raises:
    ValueError: An empty or non-finite array, or delta / beta out of range.
  """
  members = arrays.finite_vector('member_losses', member_losses)
  others = arrays.finite_vector('non_member_losses', non_member_losses)
  delta = arrays.probability('delta', delta)
  beta = arrays.probability('beta', beta)
  labels = np.concatenate([np.ones(members.size), np.zeros(others.size)])
  auc = float(metrics.roc_auc_score(labels, -np.concatenate([members, others])))
  # Guess "member" iff loss <= t; t = -inf (nobody) and each distinct loss.
  thresholds = np.concatenate([[-np.inf],
                               np.unique(np.concatenate([members, others]))])
  tp = np.searchsorted(np.sort(members), thresholds, side='right')
  fp = np.searchsorted(np.sort(others), thresholds, side='right')
  gap = tp / members.size - fp / others.size
  best = int(np.argmax(gap))
  epsilon = _bound(tp,
                   fp,
                   members.size,
                   others.size,
                   delta=delta,
                   alpha=beta / (2 * thresholds.size))
  return MembershipAudit(auc=auc,
                         advantage=float(gap[best]),
                         advantage_threshold=float(thresholds[best]),
                         epsilon_lower_bound=epsilon,
                         thresholds=int(thresholds.size),
                         members=int(members.size),
                         non_members=int(others.size),
                         delta=delta,
                         beta=beta)
