"""Edits to JSON documents and files, as a user with a text editor makes them.

For the tests of what a loader refuses (`edited`: a copy of a ledger's
JSON with one field changed or removed) and of what a run or a check does
with files edited on disk (`rewrite`; `match_manifest` after an edit inside
a checkpoint, so that only what the edit means can give it away).
"""

import copy
import hashlib
import json
import os
from typing import Any, Callable, Sequence

# `edited`'s value that removes the field.
DELETE = object()


def edited(document: Any, keys: Sequence, value: Any) -> Any:
  """A deep copy of `document` with the field at `keys` set to `value`.

  Args:
    document: Parsed JSON (dicts and lists).
    keys: The path to the field: dict keys and list indices, outermost
      first.
    value: The new value, or `DELETE` to remove the field.

  Returns:
    The edited copy; `document` is left as it was.
  """
  document = copy.deepcopy(document)
  *parents, last = keys
  target = document
  for key in parents:
    target = target[key]
  if value is DELETE:
    del target[last]
  else:
    target[last] = value
  return document


def rewrite(path: str, edit: Callable[[Any], None]) -> None:
  """Reads the JSON file at `path`, lets `edit` change it, writes it back."""
  with open(path) as f:
    document = json.load(f)
  edit(document)
  with open(path, 'w') as f:
    json.dump(document, f)


def match_manifest(checkpoint_dir: str, file_name: str) -> None:
  """Makes the checkpoint's MANIFEST.json list `file_name` as it now is
  (its SHA-256 and size), as someone who edited the file would."""
  with open(os.path.join(checkpoint_dir, file_name), 'rb') as f:
    data = f.read()
  rewrite(
      os.path.join(checkpoint_dir, 'MANIFEST.json'),
      lambda manifest: manifest.update({
          file_name: {
              'sha256': hashlib.sha256(data).hexdigest(),
              'bytes': len(data)
          }
      }))
