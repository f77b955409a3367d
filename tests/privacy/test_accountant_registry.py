"""The accountants: one row each, from which keys, allow-list and words follow."""

from dp_accounting import dp_event
import pytest

from tff_dp.privacy import accounting

_ADD_REMOVE = accounting.NeighboringRelation.ADD_OR_REMOVE_ONE


def test_every_kind_has_exactly_one_row():
  assert set(accounting.ACCOUNTANTS) == set(accounting.AccountantKind)
  for row in accounting.ACCOUNTANTS.values():
    assert row.words


@pytest.mark.parametrize('kind', list(accounting.AccountantKind))
def test_a_row_builds_its_accountant_and_composes(kind):
  event = dp_event.PoissonSampledDpEvent(0.01, dp_event.GaussianDpEvent(1.0))
  built = accounting.make_accountant(kind, _ADD_REMOVE, 1e-3)
  assert built.supports(event)
  built.compose(event, 100)
  # The row's composition and dp-accounting's own agree (PLD up to its
  # discretization, which both use).
  assert accounting.compute_epsilon([dp_event.SelfComposedDpEvent(event, 100)],
                                    delta=1e-5,
                                    accountant=kind,
                                    relation=_ADD_REMOVE) == pytest.approx(
                                        built.get_epsilon(1e-5), rel=1e-2)


def test_released_keys_follow_from_the_kinds():
  keys = {accounting.released_key(k) for k in accounting.AccountantKind}
  assert keys == {'privacy/epsilon_rdp', 'privacy/epsilon_pld'}


@pytest.mark.tff
def test_the_release_allow_list_has_every_accountants_key():
  from tff_dp.program import release  # pylint: disable=g-import-not-at-top
  for kind in accounting.AccountantKind:
    assert accounting.released_key(kind) in release.DP_SAFE_KEYS


def test_make_accountant_refuses_what_is_not_a_kind():
  with pytest.raises(TypeError, match='AccountantKind'):
    accounting.make_accountant('rdp', _ADD_REMOVE, 1e-3)
