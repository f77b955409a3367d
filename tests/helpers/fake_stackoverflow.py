"""A fake federated Stack Overflow cache, its count archives, and references.

`write_fake_cache` (sentences, for next-word prediction) and
`write_fake_posts` (posts with titles and tags, for tag prediction) write
stackoverflow.sqlite in TFF's own format (`fake_tff_caches`);
`write_fake_vocabulary` and `write_fake_tag_counts` write the word- and
tag-count archives in the layout of TFF's (`stackoverflow.word_count` in a
.tar.bz2). The archives cannot have the SHA-256 that tff-dp and Keras check
(TFF's published one): `accept_fake_vocabulary` makes both expect the
fake's. The reference functions compute ids and features in plain Python.

Run as `python -m tests.helpers.fake_stackoverflow FLAGS...`
(`programs.TRAIN_ON_FAKE_STACKOVERFLOW`), it is the training program with
fake word and tag counts written in its --data_dir and expected.
"""

import dataclasses
import hashlib
import io
import json
import os
import sys
import tarfile

from keras.src.utils import data_utils
import numpy as np

from tests.helpers import fake_tff_caches
from tff_dp.data import tff_datasets

# The words of the fake vocabulary, most frequent first.
WORDS = ('the', 'to', 'i', 'a', 'is', 'python', 'error', 'file', 'how', 'in')
SENTENCES = [
    'how to read a file in python',
    'i get an error',
    'the file is not found , so python raises an error in the loop',
    'is it',
    'unknownword  twice',  # Two spaces: an empty word, as TFF splits.
    'what is the best way to do this without a loop in the code i have',
]
# The fake tag counts, most frequent first (written to the archive in
# another order: the loader sorts by count).
TAGS = ('python', 'java', 'c++', 'sql', 'regex', 'git')
_TAG_COUNTS = {
    'sql': 70,
    'python': 100,
    'git': 40,
    'java': 90,
    'c++': 80,
    'regex': 50
}
# Posts (body, title, tags). Bodies: the sentences above (one with two
# spaces, one with no vocabulary word). Titles and tags with what TFF's
# preprocessing handles: oov words and tags, empty fields, a repeated tag
# (counted twice, as TFF).
POSTS = [
    (SENTENCES[0], 'read a file', 'python|file-io'),
    (SENTENCES[1], 'python error', 'python|java|c++'),
    (SENTENCES[2], '', 'git|regex|sql|python|java'),
    (SENTENCES[3], 'the', ''),
    (SENTENCES[4], 'zzz', 'haskell'),
    (SENTENCES[5], 'how to loop', 'sql|sql'),
    ('', '', 'java'),
]


def _example(sentence: str) -> dict:
  return {
      'creation_date': b'2010-01-01 00:00:00 UTC',
      'score': 1,
      'tags': b'python',
      'title': b'a title',
      'tokens': sentence.encode(),
      'type': b'answer'
  }


def write_fake_cache(data_dir: str, *, train_clients: dict[str, list[str]],
                     test_clients: dict[str, list[str]]) -> None:
  """stackoverflow.sqlite in TFF's format with these clients' sentences."""
  as_examples = lambda clients: {
      cid: [_example(s) for s in sentences]
      for cid, sentences in clients.items()
  }
  fake_tff_caches.write_database(
      os.path.join(data_dir, 'stackoverflow.sqlite'), {
          'train': as_examples(train_clients),
          'heldout': as_examples({'99999999': SENTENCES[:1]}),
          'test': as_examples(test_clients)
      })


def fake_clients(rng, count: int, *, sentences: int = 3):
  """`count` users ('00000000', ...) of random sentences of `SENTENCES`."""
  return {
      f'{i:08d}': [
          SENTENCES[j] for j in rng.integers(len(SENTENCES), size=sentences)
      ] for i in range(count)
  }


def write_counts_archive(data_dir: str, name: str, text: bytes) -> str:
  """<data_dir>/datasets/<name>.tar.bz2 holding one file <name> with `text`,
  the layout of TFF's count archives. Returns its path."""
  os.makedirs(os.path.join(data_dir, 'datasets'), exist_ok=True)
  path = os.path.join(data_dir, 'datasets', f'{name}.tar.bz2')
  with tarfile.open(path, 'w:bz2') as archive:
    member = tarfile.TarInfo(name)
    member.size = len(text)
    archive.addfile(member, io.BytesIO(text))
  return path


def write_fake_vocabulary(data_dir: str, words=WORDS) -> str:
  """<data_dir>/datasets/stackoverflow.word_count.tar.bz2 as TFF's: one
  'word count' line per word, most frequent first. Returns its path."""
  text = ''.join(f'{w} {1000 - i}\n' for i, w in enumerate(words)).encode()
  return write_counts_archive(data_dir, 'stackoverflow.word_count', text)


def accept_fake_vocabulary(path: str,
                           setattr_fn=setattr,
                           *,
                           counts: str = 'STACKOVERFLOW_WORD_COUNTS') -> None:
  """Makes tff-dp's and Keras' hash checks expect the archive at `path`.

  Args:
    path: The fake archive.
    setattr_fn: `setattr`, or pytest's `monkeypatch.setattr` to undo it.
    counts: Which of `tff_datasets`' count files it stands for (the tag
      counts: 'STACKOVERFLOW_TAG_COUNTS').
  """
  with open(path, 'rb') as f:
    digest = hashlib.sha256(f.read()).hexdigest()
  file = getattr(tff_datasets, counts)
  published = file.sha256
  setattr_fn(tff_datasets, counts, dataclasses.replace(file, sha256=digest))
  validate = data_utils.validate_file

  def validate_fake(fpath, file_hash, algorithm='auto', chunk_size=65535):
    # TFF's loader passes the published hash to Keras' get_file.
    if file_hash == published:
      file_hash = digest
    return validate(fpath,
                    file_hash,
                    algorithm=algorithm,
                    chunk_size=chunk_size)

  setattr_fn(data_utils, 'validate_file', validate_fake)


def reference_ids(sentence: str, words=WORDS) -> list[int]:
  """[bos, ids..., eos] of a sentence, as TFF's word tokenizer gives them."""
  n = len(words)
  return ([n + 2] + [
      words.index(w) + 1 if w in words else n + 1 for w in sentence.split(' ')
  ] + [n + 3])


def post(tokens: str, title: str, tags: str) -> dict:
  """A Stack Overflow record of a question with this body, title and tags."""
  return {
      'creation_date': b'2010-01-01 00:00:00 UTC',
      'score': 1,
      'tags': tags.encode(),
      'title': title.encode(),
      'tokens': tokens.encode(),
      'type': b'question'
  }


def write_fake_posts(data_dir: str, *, train_clients: dict[str, list[int]],
                     test_clients: dict[str, list[int]]) -> None:
  """stackoverflow.sqlite in TFF's format: each user's posts (`POSTS`
  indices)."""
  as_examples = lambda clients: {
      cid: [post(*POSTS[i]) for i in posts] for cid, posts in clients.items()
  }
  fake_tff_caches.write_database(
      os.path.join(data_dir, 'stackoverflow.sqlite'), {
          'train': as_examples(train_clients),
          'heldout': as_examples({'99999999': [0]}),
          'test': as_examples(test_clients)
      })


def write_fake_tag_counts(data_dir: str) -> str:
  """<data_dir>/datasets/stackoverflow.tag_count.tar.bz2 as TFF's: a JSON
  object of tag counts. Returns its path."""
  return write_counts_archive(data_dir, 'stackoverflow.tag_count',
                              json.dumps(_TAG_COUNTS).encode())


def write_fake_vocabularies(data_dir: str, setattr_fn=setattr) -> None:
  """Fake word and tag counts in `data_dir`, their hashes expected."""
  accept_fake_vocabulary(write_fake_vocabulary(data_dir), setattr_fn)
  accept_fake_vocabulary(write_fake_tag_counts(data_dir),
                         setattr_fn,
                         counts='STACKOVERFLOW_TAG_COUNTS')


def reference_tag_example(post_fields, words=WORDS, tags=TAGS):
  """numpy: (word frequencies over in-vocabulary words, tag counts)."""
  tokens, title, post_tags = post_fields
  counts = np.zeros(len(words), np.float64)
  for word in f'{tokens} {title}'.split():
    if word in words:
      counts[words.index(word)] += 1
  features = counts / counts.sum() if counts.sum() else counts
  hot = np.zeros(len(tags), np.float32)
  for tag in post_tags.split('|'):
    if tag in tags:
      hot[tags.index(tag)] += 1
  return features.astype(np.float32), hot


def _train_on_fake_counts(argv: list[str]) -> None:
  """The training program on FLAGS... after writing fake word and tag
  counts in its --data_dir, their hashes expected instead of TFF's."""
  data_dir = next(
      a.split('=', 1)[1] for a in argv if a.startswith('--data_dir='))
  write_fake_vocabularies(data_dir)
  from tff_dp.cli import train  # pylint: disable=g-import-not-at-top
  sys.argv = ['tff-dp', *argv]
  train.entry_point()


if __name__ == '__main__':
  # `python -m tests.helpers.fake_stackoverflow FLAGS...` from the repository
  # root (programs.TRAIN_ON_FAKE_STACKOVERFLOW).
  _train_on_fake_counts(sys.argv[1:])
