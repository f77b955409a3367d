"""Time and peak memory of `import-data` on a large generated CSV.

  python -m benchmarks.csv_import_memory [--rows=1000000] [--clients=10000]
      [--features=10] [--work_dir=DIR] [--json=RESULT.json]

Generates a CSV of `--rows` rows (client id, `--features` float features, a
label in [0, 10)) in a temporary directory, written in chunks so that the
generator itself never holds the file; rows are in random client order, as
an export sorted by time would be. It then runs the real program,
`python -m tff_dp.cli.import_data`, in a fresh subprocess and reports its wall
time and its peak resident set size (the kernel's ru_maxrss of that child,
from wait4), next to the peak RSS of a child that only imports the program
(the interpreter and module baseline). Memory is bounded if the peak does not
grow with the number of rows: compare runs of different `--rows`.

Everything is deleted afterwards unless `--work_dir` is given.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any, Optional

import numpy as np

_CHUNK_ROWS = 50_000
_NUM_CLASSES = 10
_MIB = 1024.0 * 1024.0
_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def generate_csv(path: str,
                 *,
                 rows: int,
                 clients: int,
                 features: int,
                 seed: int = 0) -> None:
  """Writes the benchmark CSV chunk by chunk."""
  rng = np.random.default_rng(seed)
  width = len(str(clients - 1))
  header = ['client'] + [f'x{j}' for j in range(features)] + ['label']
  with open(path, 'w', encoding='utf-8', newline='') as f:
    f.write(','.join(header) + '\n')
    for start in range(0, rows, _CHUNK_ROWS):
      n = min(_CHUNK_ROWS, rows - start)
      # Every client gets a row first, so the file really has `clients`
      # clients; the rest are uniform.
      ids = np.arange(start, start + n) % clients if start < clients else (
          rng.integers(0, clients, n))
      x = np.char.mod('%.7g',
                      rng.standard_normal((n, features)).astype(np.float32))
      y = rng.integers(0, _NUM_CLASSES, n)
      lines = [
          f'c{i:0{width}d},{",".join(row)},{label}\n'
          for i, row, label in zip(ids.tolist(), x.tolist(), y.tolist())
      ]
      f.writelines(lines)


def _run_child(argv: list[str]) -> tuple[float, float, str, int]:
  """Runs argv; returns (wall seconds, peak RSS MiB, stdout+stderr, code)."""
  env = dict(os.environ, PYTHONPATH=_REPO_ROOT)
  start = time.perf_counter()
  with tempfile.TemporaryFile() as out:
    child = subprocess.Popen(argv,
                             stdout=out,
                             stderr=subprocess.STDOUT,
                             cwd=_REPO_ROOT,
                             env=env)
    # wait4 gives this child's own rusage (RUSAGE_CHILDREN would be the
    # maximum over every child waited for so far).
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - start
    out.seek(0)
    output = out.read().decode('utf-8', 'replace')
  # ru_maxrss is in KiB on Linux.
  return seconds, usage.ru_maxrss * 1024.0 / _MIB, output, child.returncode


def run(*,
        rows: int,
        clients: int,
        features: int,
        work_dir: Optional[str] = None) -> dict[str, Any]:
  """Generates, converts and measures; returns the measurements."""
  if not 2 <= clients <= rows:
    raise ValueError(f'need 2 <= clients <= rows, got {clients}, {rows}')
  with tempfile.TemporaryDirectory() as tmp:
    directory = work_dir or tmp
    csv_path = os.path.join(directory, f'bench-{rows}.csv')
    db_path = os.path.join(directory, f'bench-{rows}.sqlite')
    start = time.perf_counter()
    generate_csv(csv_path, rows=rows, clients=clients, features=features)
    generate_seconds = time.perf_counter() - start
    _, baseline_mib, output, code = _run_child(
        [sys.executable, '-c', 'import tff_dp.cli.import_data'])
    if code != 0:
      raise RuntimeError(f'baseline child failed:\n{output}')
    seconds, peak_mib, output, code = _run_child([
        sys.executable, '-m', 'tff_dp.cli.import_data', f'--input={csv_path}',
        f'--output={db_path}', '--client_column=client', '--label_column=label',
        f'--num_classes={_NUM_CLASSES}', '--overwrite'
    ])
    if code != 0:
      raise RuntimeError(f'import failed (exit {code}):\n{output}')
    return {
        'rows': rows,
        'clients': clients,
        'features': features,
        'csv_mib': os.path.getsize(csv_path) / _MIB,
        'sqlite_mib': os.path.getsize(db_path) / _MIB,
        'generate_seconds': generate_seconds,
        'import_seconds': seconds,
        'rows_per_second': rows / seconds,
        'peak_rss_mib': peak_mib,
        'baseline_rss_mib': baseline_mib,
        'program_output': output.strip(),
    }


def report(result: dict[str, Any]) -> str:
  r = result
  return '\n'.join([
      f"CSV import benchmark: {r['rows']} rows, {r['clients']} clients, "
      f"{r['features']} features",
      f"  CSV {r['csv_mib']:.1f} MiB -> SQLite {r['sqlite_mib']:.1f} MiB "
      f"(generated in {r['generate_seconds']:.1f} s)",
      f"  import wall time: {r['import_seconds']:.1f} s "
      f"({r['rows_per_second']:,.0f} rows/s)",
      f"  peak RSS of the import process: {r['peak_rss_mib']:.1f} MiB "
      f"(interpreter + modules alone: {r['baseline_rss_mib']:.1f} MiB)",
      '  program output:',
      *('    ' + line for line in r['program_output'].splitlines()),
  ])


def main(argv: list[str]) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--rows', type=int, default=1_000_000)
  parser.add_argument('--clients', type=int, default=10_000)
  parser.add_argument('--features', type=int, default=10)
  parser.add_argument('--work_dir',
                      default=None,
                      help='keep the files here (default: a temp dir)')
  parser.add_argument('--json', default=None, help='also write the result')
  args = parser.parse_args(argv[1:])
  result = run(rows=args.rows,
               clients=args.clients,
               features=args.features,
               work_dir=args.work_dir)
  print(report(result))
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(result, f, indent=2)
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv))
