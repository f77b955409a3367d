"""The round loop with a fake process: charging, epsilon, budget stop, releases.

Like TFF's training_loop_test, the process is a stand-in, so these tests are
pure Python and check the loop's bookkeeping, not TFF.
"""

import math
from unittest import mock

import dp_accounting
from dp_accounting import rdp
import pytest

from tff_dp.cohorts import sampling
from tff_dp.privacy import accounting
from tff_dp.privacy import privacy_ledger
from tff_dp.privacy import privacy_tracking
from tff_dp.program import training_loop

_N, _N_PER_ROUND, _Z, _DELTA = 100, 10, 1.1, 1e-5


def _fake_process():
  process = mock.Mock()
  process.next.side_effect = lambda state, data: mock.Mock(state=state + 1,
                                                           metrics={})
  process.get_model_weights.side_effect = lambda state: state
  return process


def _sampler():
  return sampling.ClientSampler(sampling=sampling.ClientSampling.POISSON,
                                population=_N,
                                clients_per_round=_N_PER_ROUND,
                                seed=3)


def _tracker():
  sampler = _sampler()
  tracker = privacy_tracking.PrivacyTracker(
      ledger=privacy_ledger.PrivacyLedger(
          accounting.neighboring_relation(sampler.sampling)),
      round_event=lambda round_num: accounting.round_event_for(
          sampler, noise_multiplier=_Z),
      delta=_DELTA,
      accountants=(accounting.AccountantKind.RDP,))
  return sampler, tracker


def _hand_rdp_epsilon(rounds):
  # Independent construction of the same events with dp-accounting.
  accountant = rdp.RdpAccountant()
  accountant.compose(
      dp_accounting.PoissonSampledDpEvent(_N_PER_ROUND / _N,
                                          dp_accounting.GaussianDpEvent(_Z)),
      rounds)
  return accountant.get_epsilon(_DELTA)


def _loop(sampler, tracker, rounds, **overrides):
  """`run_training_loop` on the fake process from state 0: no data, no
  evaluation or round values, nothing released, unless `overrides` say."""
  settings = dict(process=_fake_process(),
                  state=0,
                  round_datasets=lambda r, c: [],
                  evaluate=lambda w: {},
                  eval_every=1,
                  release=lambda r, v: None,
                  round_values=lambda o, c, s: {})
  settings.update(overrides)
  return training_loop.run_training_loop(sampler=sampler,
                                         rounds=rounds,
                                         privacy=tracker,
                                         **settings)


def _run(rounds, *, max_epsilon=None, eval_every=1):
  sampler, tracker = _tracker()
  released = []
  result = _loop(sampler,
                 tracker,
                 rounds,
                 round_datasets=lambda round_num, cohort: list(cohort),
                 evaluate=lambda weights: {
                     'accuracy': 0.5,
                     'loss': 1.0
                 },
                 eval_every=eval_every,
                 release=lambda round_num, values: released.append(
                     (round_num, values)),
                 round_values=lambda output, cohort, seconds:
                 {'nonprivate/round_seconds': seconds},
                 max_epsilon=max_epsilon)
  return result, released, tracker


def test_every_round_is_charged_and_epsilon_matches_dp_accounting():
  result, released, tracker = _run(5)
  assert result.rounds_completed == 5
  assert result.state == 5
  assert [r for r, _ in released] == [1, 2, 3, 4, 5]
  assert tracker.ledger.rounds == 5
  for round_num, values in released:
    assert values['privacy/epsilon_rdp'] == pytest.approx(
        _hand_rdp_epsilon(round_num), rel=1e-9)


def test_epsilon_is_non_decreasing_over_rounds():
  _, released, _ = _run(6)
  eps = [values['privacy/epsilon_rdp'] for _, values in released]
  assert eps == sorted(eps)


@pytest.mark.parametrize('k', [1, 3, 6])
def test_budget_just_below_round_k_releases_exactly_k_minus_1_rounds(k):
  budget = math.nextafter(_hand_rdp_epsilon(k), 0.0)
  result, released, tracker = _run(10, max_epsilon=budget)
  assert result.rounds_completed == k - 1
  assert len(released) == k - 1
  assert tracker.ledger.rounds == k - 1
  assert 'privacy budget' in result.stop_reason
  assert all(v['privacy/epsilon_rdp'] <= budget for _, v in released)


def test_budget_exactly_at_round_k_allows_round_k():
  budget = _hand_rdp_epsilon(4)
  result, _, _ = _run(10, max_epsilon=budget)
  assert result.rounds_completed == 4


@pytest.mark.parametrize('below', [False, True])
def test_budget_at_the_stated_pld_epsilon_stops_where_it_did_uncached(below):
  # Both accountants, as the presets run: the stated epsilon is the smaller
  # (PLD here). Epsilons are remembered by composition, so the budget check
  # before round k computes what the release after round k - 1 ... k reuses;
  # the stop must be where epsilons computed afresh put it.
  k = 6
  sampler, _ = _tracker()
  event = accounting.round_event_for(sampler, noise_multiplier=_Z)
  accounting.EPSILONS.clear()
  stated = min(
      accounting.compute_epsilon(
          [event] * k,
          delta=_DELTA,
          accountant=kind,
          relation=dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE)
      for kind in accounting.AccountantKind)
  accounting.EPSILONS.clear()
  budget = math.nextafter(stated, 0.0) if below else stated
  sampler, tracker = _tracker()
  tracker.accountants = tuple(accounting.AccountantKind)
  released = []
  result = _loop(sampler,
                 tracker,
                 10,
                 release=lambda round_num, values: released.append(values),
                 max_epsilon=budget)
  assert result.rounds_completed == (k - 1 if below else k)
  assert released[-1]['privacy/epsilon_pld'] <= budget
  assert released[-1]['privacy/epsilon_pld'] < released[-1][
      'privacy/epsilon_rdp']


def test_each_round_is_persisted_charged_before_it_is_released():
  sampler, tracker = _tracker()
  events = []

  def persist(round_num, state, rows):
    events.append(('persist', round_num, tracker.ledger.rounds, state,
                   [r for r, _ in rows], 'privacy/epsilon_rdp' in rows[-1][1]))

  def release(round_num, values):
    del values
    events.append(('release', round_num))

  _loop(sampler, tracker, 2, release=release, persist=persist)
  assert events == [('persist', 1, 1, 1, [1], True), ('release', 1),
                    ('persist', 2, 2, 2, [2], True), ('release', 2)]


def test_resumed_loop_starts_after_the_checkpoint():
  sampler, tracker = _tracker()
  for round_num in (1, 2):
    tracker.charge(round_num, [])
  process = _fake_process()
  result = _loop(sampler,
                 tracker,
                 4,
                 process=process,
                 state=2,
                 start_round=3,
                 last_values={'eval/accuracy': 0.5})
  assert process.next.call_count == 2
  assert result.rounds_completed == 4 and result.state == 4
  assert tracker.ledger.rounds == 4


def test_resumed_loop_with_nothing_left_keeps_last_values():
  sampler, tracker = _tracker()
  result = _loop(sampler,
                 tracker,
                 3,
                 state=7,
                 start_round=4,
                 last_values={'eval/accuracy': 0.5})
  assert result.rounds_completed == 3
  assert result.last_values == {'eval/accuracy': 0.5}


def test_evaluation_every_k_rounds_and_after_the_last():
  _, released, _ = _run(5, eval_every=2)
  evaluated = [r for r, v in released if 'eval/accuracy' in v]
  assert evaluated == [2, 4, 5]


def test_each_round_trains_the_sampled_cohort():
  sampler, tracker = _tracker()
  process = _fake_process()
  _loop(sampler,
        tracker,
        3,
        process=process,
        round_datasets=lambda r, c: [int(i) for i in c])
  for call, round_num in zip(process.next.call_args_list, [1, 2, 3]):
    assert call.args[1] == [int(i) for i in sampler.sample(round_num)]


def _local_only_tracker(*, central: bool):
  from tff_dp.privacy import local_accounting  # pylint: disable=g-import-not-at-top
  sampler = _sampler()
  event = accounting.round_event_for(sampler,
                                     noise_multiplier=_Z if central else 0.0)
  return sampler, privacy_tracking.PrivacyTracker(
      ledger=privacy_ledger.PrivacyLedger(
          accounting.neighboring_relation(sampler.sampling)),
      round_event=lambda round_num: event,
      delta=_DELTA,
      accountants=tuple(accounting.AccountantKind),
      local=local_accounting.LocalPrivacyLedger(
          local_accounting.LocalMechanismSpec(
              local_accounting.LocalMechanism.LAPLACE, epsilon_local=1.0),
          population=_N))


@pytest.mark.parametrize('central', [False, True])
def test_released_epsilons_are_those_of_the_claimed_guarantees(central):
  sampler, tracker = _local_only_tracker(central=central)
  released = []
  _loop(sampler,
        tracker,
        3,
        evaluate=None,
        release=lambda r, values: released.append(values))
  for values in released:
    assert all(math.isfinite(v) for v in values.values()), values
    assert values['privacy/local_epsilon'] > 0
    central_keys = [k for k in values if k.startswith('privacy/epsilon_')]
    # A local-only run has no central series (it would be infinite).
    assert bool(central_keys) == central, values
  assert tracker.guarantees() == (['central', 'local']
                                  if central else ['local'])


def test_console_line_names_each_guarantee_and_never_prints_inf():
  from tff_dp.cli import console  # pylint: disable=g-import-not-at-top
  parts = console._guarantee_parts(  # pylint: disable=protected-access
      {
          'privacy/local_epsilon': 4.0,
          'eval/accuracy': 0.5
      },
      private=True)
  assert parts == ['local epsilon 4.000']
  parts = console._guarantee_parts(  # pylint: disable=protected-access
      {
          'privacy/epsilon_rdp': 2.0,
          'privacy/example_epsilon': 3.0
      },
      private=True)
  assert parts == ['epsilon rdp 2.000', 'record-level epsilon 3.000']
  assert console._guarantee_parts(  # pylint: disable=protected-access
      {}, private=False) == ['not private']


def _fake_block_runner(calls):
  """run_block for the fake process: each round adds 1 to the state."""

  def run_block(state, inputs):
    calls.append(list(inputs))
    return state + len(inputs), [mock.Mock(metrics={}) for _ in inputs]

  return run_block


def _run_blocks(rounds, per_call, **overrides):
  """`_run`'s loop with rounds in blocks of up to `per_call`."""
  sampler, tracker = _tracker()
  released, persisted, calls = [], [], []
  process = _fake_process()
  settings = dict(process=process,
                  round_datasets=lambda round_num, cohort: round_num,
                  evaluate=lambda weights: {'accuracy': float(weights)},
                  release=lambda round_num, values: released.append(
                      (round_num, values)),
                  persist=lambda round_num, state, rows: persisted.append(
                      (round_num, state, [r for r, _ in rows], tracker.ledger.
                       rounds, len(released))),
                  run_block=_fake_block_runner(calls),
                  rounds_per_call=per_call)
  settings.update(overrides)
  result = _loop(sampler, tracker, rounds, **settings)
  return result, released, persisted, calls, process


def test_blocks_run_in_one_call_each_and_release_every_round():
  result, released, persisted, calls, process = _run_blocks(7,
                                                            3,
                                                            eval_every=100)
  assert calls == [[1, 2, 3], [4, 5, 6]]  # Round 7 alone: process.next.
  assert process.next.call_count == 1
  assert result.rounds_completed == 7 and result.state == 7
  assert [r for r, _ in released] == list(range(1, 8))
  for round_num, values in released:
    # Each row carries the epsilon after ITS round, not after the block.
    assert values['privacy/epsilon_rdp'] == pytest.approx(
        _hand_rdp_epsilon(round_num), rel=1e-9)
  # Persisted once per block, every round of it charged, nothing of it
  # released yet.
  assert [(p[0], p[2], p[3], p[4]) for p in persisted] == [(3, [1, 2, 3], 3, 0),
                                                           (6, [4, 5, 6], 6, 3),
                                                           (7, [7], 7, 6)]


def test_blocks_end_at_evaluated_rounds():
  _, released, _, calls, _ = _run_blocks(9, 4, eval_every=3)
  assert calls == [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
  evaluated = [
      (r, v['eval/accuracy']) for r, v in released if 'eval/accuracy' in v
  ]
  # The model evaluated is the one after the evaluated round.
  assert evaluated == [(3, 3.0), (6, 6.0), (9, 9.0)]


def test_blocks_without_evaluation_ignore_eval_every():
  _, _, _, calls, _ = _run_blocks(8, 4, eval_every=1, evaluate=None)
  assert calls == [[1, 2, 3, 4], [5, 6, 7, 8]]


@pytest.mark.parametrize('k', [1, 2, 4, 5, 6, 9])
def test_budget_stops_blocks_where_it_stops_single_rounds(k):
  budget = math.nextafter(_hand_rdp_epsilon(k), 0.0)
  result, released, persisted, calls, _ = _run_blocks(12,
                                                      4,
                                                      eval_every=100,
                                                      max_epsilon=budget)
  assert result.rounds_completed == k - 1
  assert [r for r, _ in released] == list(range(1, k))
  assert all(v['privacy/epsilon_rdp'] <= budget for _, v in released)
  # No block reached past the budget.
  assert all(max(call) <= k - 1 for call in calls)
  assert 'privacy budget' in result.stop_reason
  if k == 1:
    return  # No round ran: nothing evaluated nor persisted.
  # Blocks end at the last round the budget allows, which is evaluated: the
  # model evaluated is the one after the last round that ran.
  evaluated = [
      (r, v['eval/accuracy']) for r, v in released if 'eval/accuracy' in v
  ]
  assert evaluated == [(k - 1, float(k - 1))]
  # Every block, the last included, is persisted (all its rounds charged)
  # before any of its rows is released.
  assert persisted[-1][0] == k - 1
  assert persisted[-1][3] == k - 1
  assert persisted[-1][4] == k - 1 - len(persisted[-1][2])


def test_resumed_blocks_start_after_the_checkpoint():
  sampler, tracker = _tracker()
  for round_num in (1, 2):
    tracker.charge(round_num, [])
  calls = []
  result = _loop(sampler,
                 tracker,
                 6,
                 state=2,
                 start_round=3,
                 round_datasets=lambda r, c: r,
                 eval_every=100,
                 run_block=_fake_block_runner(calls),
                 rounds_per_call=2)
  assert calls == [[3, 4], [5, 6]]
  assert result.rounds_completed == 6 and tracker.ledger.rounds == 6


@pytest.mark.parametrize('k', [2, 4, 7])
def test_the_last_round_before_a_budget_stop_is_evaluated(k):
  # Rounds 1..k-1 fit the budget; with rare evaluations, the model the run
  # ends with (after round k-1) must still be evaluated.
  budget = math.nextafter(_hand_rdp_epsilon(k), 0.0)
  result, released, _ = _run(10, max_epsilon=budget, eval_every=50)
  assert result.rounds_completed == k - 1
  assert 'privacy budget' in result.stop_reason
  evaluated = [r for r, v in released if 'eval/accuracy' in v]
  assert evaluated == [k - 1]
  assert 'eval/accuracy' in result.last_values


@pytest.mark.parametrize('per_call', [1, 3, 10])
@pytest.mark.parametrize('eval_every', [1, 2, 5, 10, 50])
@pytest.mark.parametrize('evaluated', [False, True])
def test_the_start_up_words_say_how_many_rounds_a_call_will_run(
    per_call, eval_every, evaluated):
  # The longest block the loop will run (away from a budget), as the loop
  # cuts them, and the start-up line's number must agree.
  lengths, round_num = [], 1
  while round_num <= 100:
    lengths.append(
        training_loop._block_length(  # pylint: disable=protected-access
            round_num,
            rounds=100,
            rounds_per_call=per_call,
            eval_every=eval_every if evaluated else None))
    round_num += lengths[-1]
  words = training_loop.calls_words(per_call,
                                    eval_every=eval_every,
                                    evaluated=evaluated)
  if max(lengths) == 1:
    assert words.startswith('one round per call'), words
  else:
    assert words.startswith(f'up to {max(lengths)} rounds per call'), words
