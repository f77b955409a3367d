"""The canary plan: who is a canary, and each round's canary slots."""

import numpy as np
import pytest

from tff_dp.audit import canary_plan


def test_plan_splits_cohorts_and_builds_the_schedule():
  plan = canary_plan.CanaryPlan(population=5,
                                inserted=np.array([True, False, True]),
                                absent_if_not_inserted=True)
  assert plan.total_population == 8
  np.testing.assert_array_equal(plan.real_clients([7, 0, 5, 4, 6]), [0, 4])
  assert plan.round_codes([7, 0, 5, 4, 6]) == [2, 0]
  replace = canary_plan.CanaryPlan(population=5,
                                   inserted=plan.inserted,
                                   absent_if_not_inserted=False)
  assert replace.round_codes([6, 1]) == [canary_plan.ZERO_UPDATE]
  table = plan.schedule([[5, 7], [1], [6, 5]])
  np.testing.assert_array_equal(table, [[0, 2], [-1, -1], [0, -1], [-1, -1]])
  assert table.dtype == np.int32
  with pytest.raises(ValueError, match='at least 2 canaries'):
    canary_plan.CanaryPlan(population=5,
                           inserted=np.array([True]),
                           absent_if_not_inserted=True)
