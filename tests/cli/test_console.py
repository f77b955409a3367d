"""The training program's console: start-up phases, round lines and the ETA.

Pure Python, on a fake clock and a captured stream: what a run prints
between its start and its summary, without running one.
"""

import io

import pytest

from tff_dp.cli import console


class _Clock:
  """Seconds that advance only when a test says so."""

  def __init__(self):
    self.now = 1000.0

  def __call__(self):
    return self.now


class _Terminal(io.StringIO):

  def isatty(self):
    return True


_NONPRIVATE = {'eval/accuracy': 0.5}


def _values(seconds=0.5, **extra):
  """A non-private round's released values (its round time included)."""
  return {**_NONPRIVATE, 'nonprivate/round_seconds': seconds, **extra}


def _progress(rounds, clock, out, **kwargs):
  kwargs.setdefault('private', False)
  return console.Progress(rounds, clock=clock, out=out, **kwargs)


def test_startup_phases_print_the_seconds_since_the_start():
  clock, out = _Clock(), io.StringIO()
  phases = console.StartupPhases(clock=clock, out=out)
  phases('loading the data')
  clock.now += 4.56
  phases('building the learning process')
  assert out.getvalue() == ('[0.0 s] loading the data\n'
                            '[4.6 s] building the learning process\n')


def test_a_dp_run_prints_its_phases_without_times_or_labelled():
  # The seconds grow with the client data: a DP run's are released only
  # with its other times, labelled.
  clock, out = _Clock(), io.StringIO()
  phases = console.StartupPhases(clock=clock, out=out)
  phases.hide_times()
  clock.now += 4.56
  phases('loading the data')
  phases.label_times()
  phases('building the learning process')
  assert out.getvalue() == (
      '[start-up] loading the data\n'
      '[4.6 s, non-private] building the learning process\n')


def test_eta_starts_at_the_end_of_the_first_round_and_counts_rounds_since():
  clock, out = _Clock(), io.StringIO()
  progress = _progress(10, clock, out)
  # Round 1 includes tracing: 300 s that the other rounds do not repeat.
  clock.now += 300
  progress(1, _values(seconds=290.0))
  clock.now += 2
  progress(2, _values())
  clock.now += 4
  progress(3, _values())
  lines = out.getvalue().splitlines()
  assert 'ETA' not in lines[0]  # Nothing to go by yet.
  assert lines[1].endswith('ETA 0m16s')  # 2 s a round, 8 rounds left.
  assert lines[2].endswith('ETA 0m21s')  # (2 + 4) / 2 s a round, 7 left.


def test_a_resumed_run_measures_from_its_own_first_round():
  clock, out = _Clock(), io.StringIO()
  progress = _progress(100, clock, out, log_every=1)
  progress(51, _values())
  clock.now += 10
  progress(52, _values())
  assert out.getvalue().splitlines()[1].endswith('ETA 8m00s')  # 48 x 10 s.


def test_a_dp_run_prints_no_round_time_nor_eta():
  clock, out = _Clock(), io.StringIO()
  progress = _progress(3, clock, out, private=True)
  for round_num in (1, 2, 3):
    clock.now += 1
    progress(round_num, {'eval/accuracy': 0.5, 'privacy/epsilon_rdp': 1.0})
  assert out.getvalue() == ''.join(
      f'round {r}/3 | accuracy 0.5000 | epsilon rdp 1.000\n' for r in (1, 2, 3))


@pytest.mark.parametrize(
    'log_every,rounds,eval_every,expected',
    [
        (0, 3, 1, 1),  # A short run: every round.
        (0, 100, 1, 2),  # About 50 lines.
        (0, 1500, 1, 30),
        (0, 1500, 7, 35),  # A multiple of --eval_every: lines with accuracy.
        (0, 1500, 100, 30),  # Rarer evaluations are printed besides.
        # Evaluations just rarer than the lines (8): lines at evaluations
        # only, not every 8 rounds and every 10th besides.
        (0, 400, 10, 10),
        (0, 400, 16, 16),
        (0, 400, 17, 8),
        (0, 30, 10, 1),  # A short run: every round.
        (5, 1500, 1, 5),  # As given.
    ])
def test_log_every_resolution(log_every, rounds, eval_every, expected):
  assert console.resolve_log_every(log_every,
                                   rounds=rounds,
                                   eval_every=eval_every) == expected


def _full_lines(rounds, *, eval_every, log_every=0, terminal=False):
  clock = _Clock()
  out = _Terminal() if terminal else io.StringIO()
  progress = _progress(rounds,
                       clock,
                       out,
                       log_every=console.resolve_log_every(
                           log_every, rounds=rounds, eval_every=eval_every),
                       eval_every=eval_every,
                       terminal=terminal)
  for round_num in range(1, rounds + 1):
    clock.now += 1
    evaluated = round_num % eval_every == 0 or round_num == rounds
    progress(round_num,
             _values() if evaluated else {'nonprivate/round_seconds': 0.5})
  progress.close()
  return out.getvalue()


def test_a_long_run_prints_about_fifty_lines_not_one_per_round():
  lines = _full_lines(1500, eval_every=1).splitlines()
  rounds = [int(line.split()[1].split('/')[0]) for line in lines]
  assert rounds == [1] + list(range(30, 1501, 30))
  assert all('accuracy' in line for line in lines)


def test_rare_evaluations_are_printed_besides_the_regular_lines():
  lines = _full_lines(1500, eval_every=100).splitlines()
  rounds = {int(line.split()[1].split('/')[0]) for line in lines}
  assert set(range(100, 1501, 100)) <= rounds
  assert set(range(30, 1501, 30)) <= rounds
  assert len(rounds) == 1 + 50 + 15 - 5  # Rounds 300, 600, ... are both.


def test_on_a_terminal_one_line_is_rewritten_in_place_between_full_lines():
  text = _full_lines(10, eval_every=1, log_every=5, terminal=True)
  assert text.count('\r') == 10  # Every round starts at the line's start.
  lines = text.split('\n')  # Not splitlines(): it splits at '\r' too.
  assert lines[-1] == ''
  # What stays on screen: the last text after a '\r' of each line.
  shown = [line.rsplit('\r', 1)[-1].rstrip() for line in lines[:-1]]
  assert [line.split(' |')[0] for line in shown
         ] == ['round 1/10', 'round 5/10', 'round 10/10']
  # Round 9's line was shown, then round 10's over it, longer: nothing of
  # round 9 is left on screen.
  assert 'round 9/10' in lines[2] and 'round 9/10' not in shown[2]


def test_a_run_stopped_early_ends_with_its_last_round():
  clock, out = _Clock(), io.StringIO()
  progress = _progress(100, clock, out, log_every=10)
  for round_num in range(1, 14):  # E.g. --max_epsilon stops it at 13.
    progress(round_num, _values())
  progress.close()
  rounds = [line.split()[1] for line in out.getvalue().splitlines()]
  assert rounds == ['1/100', '10/100', '13/100']
  progress.close()  # Idempotent.
  assert len(out.getvalue().splitlines()) == 3


def test_a_shorter_line_covers_the_longer_one_it_replaces():
  clock, out = _Clock(), _Terminal()
  progress = _progress(100, clock, out, log_every=10, terminal=True)
  progress(1, _values())
  progress(2, _values())  # With accuracy.
  long_line = out.getvalue().split('\r')[-1]
  progress(3, {'nonprivate/round_seconds': 0.5})  # No accuracy: shorter.
  short_line = out.getvalue().split('\r')[-1]
  assert len(short_line) >= len(long_line)
  assert short_line.startswith('round 3/100 | not private')


def test_a_terminal_gets_fewer_full_lines_to_fit_a_screen():
  assert console.resolve_log_every(0, rounds=100, eval_every=1,
                                   terminal=True) == 10
  assert console.resolve_log_every(3, rounds=100, eval_every=1,
                                   terminal=True) == 3
