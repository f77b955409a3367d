"""A fake federated Shakespeare cache, and its ids and windows by hand.

`write_fake_cache` writes shakespeare.sqlite in TFF's own format
(`fake_tff_caches`); the reference functions compute what tff-dp must read
from it in plain Python, from TFF's vocabulary.
"""

import os

import numpy as np
import tensorflow as tf

from tests.helpers import fake_tff_caches
from tff_dp.data import token_sources

# 'é' is two bytes outside TFF's vocabulary: two oov ids, as TFF splits bytes.
LINES = [
    'To be, or not to be, that is the question:\n',
    'Whether \'tis nobler in the mind to suffer\r',
    'The slings and arrows of outrageous fortune, ',
    'Or to take arms against a sea of troubles [é] ~{}',
]


def snippet(rng, length):
  """`length` characters of Hamlet, starting at a random line."""
  text = ''.join(LINES) * (1 + length // 100)
  start = int(rng.integers(len(LINES[0])))
  return text[start:start + length]


def reference_ids(text: str) -> list[int]:
  """[bos, ids..., eos] computed in Python from TFF's vocabulary."""
  vocabulary = token_sources.SHAKESPEARE_VOCABULARY
  chars = vocabulary.tokens
  ids = [
      chars.index(chr(b)) + 1 if chr(b) in chars else vocabulary.oov
      for b in text.encode('utf-8')
  ]
  return [vocabulary.bos] + ids + [vocabulary.eos]


def reference_windows(records: list[list[int]], window: int):
  """(features, label) pairs: the joined stream cut into window + 1 ids."""
  stream = [token for record in records for token in record]
  length = window + 1
  chunks = [stream[i:i + length] for i in range(0, len(stream), length)]
  chunks[-1] = [0] * (length - len(chunks[-1])) + chunks[-1]
  return [(chunk[:window], chunk[window]) for chunk in chunks]


def as_pairs(dataset: tf.data.Dataset):
  """A dataset of (features, label) windows as (list of ids, id) pairs."""
  return [(f.astype(np.int64).tolist(), int(y))
          for f, y in dataset.as_numpy_iterator()]


def write_fake_cache(data_dir: str, *, train_clients: dict[str, list[str]],
                     test_clients: dict[str, list[str]]) -> None:
  """shakespeare.sqlite in TFF's format with these clients' snippets."""
  as_examples = lambda clients: {
      cid: [{
          'snippets': s.encode('utf-8')
      } for s in snippets] for cid, snippets in clients.items()
  }
  fake_tff_caches.write_database(os.path.join(data_dir, 'shakespeare.sqlite'), {
      'train': as_examples(train_clients),
      'test': as_examples(test_clients)
  })


def fake_clients(rng, count: int, *, snippets: int = 2, length: int = 60):
  """`count` roles ('PLAY_000_ROLE', ...) of random snippets."""
  return {
      f'PLAY_{i:03d}_ROLE': [snippet(rng, length) for _ in range(snippets)]
      for i in range(count)
  }
