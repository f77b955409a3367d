"""Screenshots of a run's TensorBoard dashboards, taken by headless Chromium.

What a user sees in TensorBoard is rendered by its JavaScript, so the event
files alone do not show whether the HParams dashboard lists the runs or the
text plugin wraps the privacy statement. This script starts TensorBoard on a
log directory (a run directory, or a directory of runs such as `runs/`) on a
free port of 127.0.0.1, waits until it serves the runs, and saves one PNG per
dashboard:

  scalars.png         Scalars: epsilon and accuracy first, unsmoothed (the
                      README's URL: `_smoothingWeight=0`, `tagFilter=...`)
  custom_scalars.png  Custom Scalars: "privacy and accuracy" first, unsmoothed
  hparams.png         HParams: one row per run, its settings and metrics
  text.png            Text: the privacy statement (wrapped paragraphs)

Then it stops TensorBoard (and everything TensorBoard started). It is a
developer's check, not a test of the suite: a browser takes tens of seconds.

Needs Chromium (Debian's package; any Chromium or Chrome with `--headless`
and `--screenshot` will do):

  sudo apt-get install -y chromium

Usage, from the repository root:

  ./run.sh train --flagfile=configs/smoke.cfg --run_name=smoke
  .venv/bin/python -m tools.tensorboard_screenshots runs/ --out_dir=/tmp/shots
  .venv/bin/python -m tools.tensorboard_screenshots runs/smoke/tensorboard \\
      --dashboards=hparams,text

Exits 2 with one line if Chromium or the log directory is missing, 1 if
TensorBoard does not serve the runs or Chromium fails.
"""

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

# Dashboard -> URL fragment. The smoothing weight lives in the fragment
# (TensorBoard's default is 0.6, which draws epsilon below its values).
DASHBOARDS = {
    # Epsilon and accuracy first: the tags that match the filter.
    'scalars': 'scalars&_smoothingWeight=0&tagFilter=epsilon%7Caccuracy',
    'custom_scalars': 'custom_scalars&_smoothingWeight=0',
    'hparams': 'hparams',
    # The statement; the flags (a code block, one per line) come first else.
    'text': 'text&tagFilter=privacy_statement',
}
# The HParams table shows five settings and five metrics, ~150 px each: the
# metrics (accuracy, the epsilons) start past 1,300 px.
_WINDOWS = {'hparams': '2400,1000'}
_DEFAULT_WINDOW = '1400,1000'
_BROWSERS = ('chromium', 'chromium-browser', 'google-chrome')
_INSTALL_HINT = ('no Chromium found (looked for ' + ', '.join(_BROWSERS) +
                 ' on PATH); install it with `sudo apt-get install -y '
                 'chromium` or pass --chromium=PATH')
_SERVE_TIMEOUT_SECONDS = 120
_BROWSER_TIMEOUT_SECONDS = 180


class ScreenshotError(RuntimeError):
  """TensorBoard or the browser did not do its part."""


def find_browser(explicit: str = '') -> str:
  """The Chromium binary to run, or '' if there is none."""
  if explicit:
    return explicit if shutil.which(explicit) else ''
  for name in _BROWSERS:
    path = shutil.which(name)
    if path:
      return path
  return ''


def free_port() -> int:
  """A port of 127.0.0.1 that nothing listens on now."""
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _runs(base_url: str) -> list[str]:
  with urllib.request.urlopen(base_url + 'data/runs', timeout=10) as response:
    return json.loads(response.read())


def start_tensorboard(logdir: str, port: int, log_path: str):
  """TensorBoard on 127.0.0.1:port, in a session of its own (to stop it
  with everything it starts)."""
  with open(log_path, 'wb') as log:
    return subprocess.Popen([
        sys.executable, '-m', 'tensorboard.main', '--logdir', logdir, '--host',
        '127.0.0.1', '--port',
        str(port)
    ],
                            stdin=subprocess.DEVNULL,
                            stdout=log,
                            stderr=subprocess.STDOUT,
                            start_new_session=True)


def wait_serving(process, base_url: str, log_path: str) -> list[str]:
  """The runs TensorBoard serves, once it serves at least one."""
  deadline = time.monotonic() + _SERVE_TIMEOUT_SECONDS
  while time.monotonic() < deadline:
    if process.poll() is not None:
      with open(log_path, errors='replace') as f:
        raise ScreenshotError(f'TensorBoard exited with {process.returncode}:'
                              f'\n{f.read()}')
    try:
      runs = _runs(base_url)
      if runs:
        return runs
    except OSError:
      pass
    time.sleep(0.5)
  raise ScreenshotError(
      f'TensorBoard served no run after {_SERVE_TIMEOUT_SECONDS} s (is '
      'there an events.out.tfevents.* file under the log directory?)')


def stop(process) -> None:
  """Stops TensorBoard's session: TensorBoard and what it started."""
  try:
    os.killpg(process.pid, signal.SIGTERM)
  except ProcessLookupError:
    return
  try:
    process.wait(timeout=30)
  except subprocess.TimeoutExpired:
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def screenshot(browser: str, url: str, path: str, *, budget_ms: int,
               window: str) -> None:
  """Saves `url` as rendered by headless `browser` after `budget_ms` of
  (virtual) time for its scripts to load the data."""
  profile = tempfile.mkdtemp(prefix='tb-shot-profile-')
  try:
    result = subprocess.run([
        browser, '--headless', '--no-sandbox', '--disable-gpu',
        '--disable-quic', '--no-first-run', '--disable-background-networking',
        '--disable-component-update', '--disable-sync',
        f'--user-data-dir={profile}', f'--screenshot={path}',
        f'--window-size={window}', f'--virtual-time-budget={budget_ms}', url
    ],
                            stdin=subprocess.DEVNULL,
                            capture_output=True,
                            text=True,
                            timeout=_BROWSER_TIMEOUT_SECONDS,
                            check=False)
  finally:
    shutil.rmtree(profile, ignore_errors=True)
  if result.returncode != 0 or not os.path.isfile(path):
    raise ScreenshotError(f'{browser} failed on {url} (exit '
                          f'{result.returncode}):\n{result.stderr[-2000:]}')


def take(logdir: str, out_dir: str, *, dashboards, browser: str, budget_ms: int,
         window: str) -> list[str]:
  """Serves `logdir` and saves the `dashboards`' screenshots in `out_dir`.

  Returns:
    The PNG paths, in the order of `dashboards`.
  """
  os.makedirs(out_dir, exist_ok=True)
  port = free_port()
  base_url = f'http://127.0.0.1:{port}/'
  log_path = os.path.join(out_dir, 'tensorboard.log')
  process = start_tensorboard(logdir, port, log_path)
  try:
    runs = wait_serving(process, base_url, log_path)
    print(
        f'TensorBoard at {base_url} serves {len(runs)} runs: '
        f'{", ".join(runs)}',
        flush=True)
    paths = []
    for name in dashboards:
      path = os.path.join(out_dir, f'{name}.png')
      screenshot(browser,
                 base_url + '#' + DASHBOARDS[name],
                 path,
                 budget_ms=budget_ms,
                 window=window or _WINDOWS.get(name, _DEFAULT_WINDOW))
      print(f'{name}: {path}', flush=True)
      paths.append(path)
    return paths
  finally:
    stop(process)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
      description=__doc__.split('\n\n', maxsplit=1)[0])
  parser.add_argument('logdir',
                      help='a run directory, its tensorboard/, or runs/')
  parser.add_argument('--out_dir',
                      default='',
                      help='where the PNGs go (default: a new directory '
                      'under the system\'s temporary directory)')
  parser.add_argument('--dashboards',
                      default=','.join(DASHBOARDS),
                      help='comma-separated, of ' + ', '.join(DASHBOARDS) +
                      ' (default: all)')
  parser.add_argument('--chromium',
                      default='',
                      help='the browser binary (default: the first of ' +
                      ', '.join(_BROWSERS) + ' on PATH)')
  parser.add_argument('--budget_ms',
                      type=int,
                      default=15000,
                      help='virtual time the page gets to load its data '
                      '(default: %(default)s)')
  parser.add_argument('--window',
                      default='',
                      help='width,height of every screenshot (default: '
                      f'{_DEFAULT_WINDOW}, HParams {_WINDOWS["hparams"]})')
  args = parser.parse_args(argv)
  dashboards = [d for d in args.dashboards.split(',') if d]
  unknown = sorted(set(dashboards) - set(DASHBOARDS))
  if unknown or not dashboards:
    parser.error(f'--dashboards: unknown {unknown}; choose from '
                 f'{", ".join(DASHBOARDS)}')
  if not os.path.isdir(args.logdir):
    print(f'error: {args.logdir}: no such directory', file=sys.stderr)
    return 2
  browser = find_browser(args.chromium)
  if not browser:
    print(f'error: {_INSTALL_HINT}', file=sys.stderr)
    return 2
  out_dir = args.out_dir or tempfile.mkdtemp(prefix='tensorboard-screenshots-')
  try:
    take(args.logdir,
         out_dir,
         dashboards=dashboards,
         browser=browser,
         budget_ms=args.budget_ms,
         window=args.window)
  except (ScreenshotError, subprocess.TimeoutExpired) as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  return 0


if __name__ == '__main__':
  sys.exit(main())
