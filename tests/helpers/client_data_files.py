"""Client-data files (--client_data) made by the real importer from rows.

For the tests of what reads them (the source, the loader's checks, the
program): `imported` writes rows as a CSV table and imports it with
`csv_import.import_table`, as `python -m tff_dp.cli.import_data` would.
"""

from typing import Iterable, Sequence

from tff_dp.data import csv_import


def imported(directory,
             rows: Iterable[tuple[str, Sequence[float], int]],
             *,
             name: str = 'data',
             **import_args) -> str:
  """Imports `rows` into <directory>/<name>.sqlite; returns its path.

  Args:
    directory: Where <name>.csv and <name>.sqlite are written (a path).
    rows: (client id, features, label) per row, in file order.
    name: The files' name.
    **import_args: More arguments of `csv_import.import_table` (test_split,
      test_fraction, num_classes, ...).
  """
  rows = list(rows)
  header = [f'f{j}' for j in range(len(rows[0][1]))]
  lines = [','.join(['client', *header, 'label'])]
  lines += [
      ','.join([client, *map(str, features),
                str(label)]) for client, features, label in rows
  ]
  csv_path = directory / f'{name}.csv'
  csv_path.write_text('\n'.join(lines) + '\n')
  output = str(directory / f'{name}.sqlite')
  csv_import.import_table(str(csv_path),
                          output_path=output,
                          client_column='client',
                          label_column='label',
                          **import_args)
  return output
