"""TFF's Shakespeare and Stack Overflow as next-token training sources.

Federated Shakespeare (Caldas et al. 2018, "LEAF: A Benchmark for Federated
Settings", arXiv:1812.01097; McMahan et al. 2017, "Communication-Efficient
Learning of Deep Networks from Decentralized Data", AISTATS) has one client
per speaking role of the plays (715 in TFF's training split), each holding
snippets of its lines. Federated Stack Overflow (TFF's own; Reddi et al.
2021, "Adaptive Federated Optimization", ICLR) has one client per user
(342,477 in the training split), each holding sentences of its posts.

The training pipeline is single-label classification of fixed-size float
feature vectors, so both are framed as "predict the next token from the W
tokens before it":

1. Each record (a snippet, a sentence) becomes token ids as in TFF's
   baselines (`tff.simulation.baselines.shakespeare.
   char_prediction_preprocessing` and `...stackoverflow.
   word_prediction_preprocessing`): [bos, ids..., eos], with 0 the padding
   id. Shakespeare: the 86 characters of TFF's `CHAR_VOCAB` are ids 1..86,
   then oov 87 (any other byte), bos 88, eos 89: 90 ids. Stack Overflow: the
   10,000 most frequent words of TFF's word counts are ids 1..10,000 (words
   are split on single spaces, as TFF does), then oov 10,001, bos 10,002,
   eos 10,003: 10,004 ids.
2. A client's records are joined, in the file's order, into one token stream,
   which is cut into non-overlapping windows of W + 1 tokens (W = 80 for
   Shakespeare, TFF's SEQUENCE_LENGTH; W = 20 for Stack Overflow, TFF's
   sequence length). The last window of a client, usually shorter, is
   left-padded with 0.
3. A window's first W ids are the features (float32; the rnn model embeds
   them as integers) and its last id is the label. For the transformer
   (`registry.LoadRequest.next_token_labels`) the labels are the window's
   last W ids instead, the next token at every position
   (`labels.LabelKind.NEXT_TOKENS`), as in TFF's baselines.

Unlike TFF's sequence-to-sequence baselines, which predict the token at
EVERY position of a window, this predicts ONE token per window, so a model
sees each token as a label at most once and its accuracy is not comparable
to TFF's reported numbers. Windows run across record boundaries (the stream
of a client is language-model text, like TFF's own Shakespeare batching of
tokens): cutting each record separately would make most Stack Overflow
sentences (shorter than 20 words) a single window whose label is eos, or no
window at all. Stack Overflow sentences are not truncated to 20 words as in
TFF, and left padding keeps every label a real token (never the padding).
Accuracy counts every label, the special tokens included.

A client's number of windows is known only once its text is read, so
`client_sizes()` counts its records (snippets, sentences) from the file's
`client_metadata` table; the round's shuffle buffer (`tff_dp.program.client_data`)
therefore holds as many windows as the client has records.

The server's held-out set: Shakespeare, the file's whole test split (2,356
snippets); Stack Overflow, a bounded sample (its test split holds 16.6 M
sentences of 204,088 users): 2,000 test users chosen by a fixed seed, at most
5 windows of each, so at most 10,000 windows (0.8 MB as float32), cached by
the server's evaluation.
"""

import dataclasses
from typing import Callable, Optional

import numpy as np
import tensorflow as tf

from tff_dp.data import benchmark_source
from tff_dp.data import registry
from tff_dp.data import tff_datasets
from tff_dp.data.labels import LabelKind

# TFF's Shakespeare vocabulary (char_prediction_preprocessing.CHAR_VOCAB, from
# TFF's text generation tutorial), in TFF's order: ids follow it.
SHAKESPEARE_CHARS = ('dhlptx@DHLPTX'
                     ' $(,048cgkoswCGKOSW[_#\'/37;?bfjnrvzBFJNRVZ"&*.26:\n'
                     'aeimquyAEIMQUY]!%)-159\r')
SHAKESPEARE_WINDOW = 80
STACKOVERFLOW_WINDOW = 20
STACKOVERFLOW_VOCAB_WORDS = 10_000
# The server's held-out sample of Stack Overflow's test split, shared by the
# next-word and the tag task (`stackoverflow_tags`): this many test users
# (a fixed seeded choice), at most this many examples (windows; posts) of each.
STACKOVERFLOW_TEST_USERS = 2_000
STACKOVERFLOW_TEST_EXAMPLES_PER_USER = 5

IdsFn = Callable[[dict[str, tf.Tensor]], tf.Tensor]


@dataclasses.dataclass(frozen=True)
class TokenVocabulary:
  """Token ids as TFF's baselines assign them: 0 pad, 1..n the tokens.

  Attributes:
    tokens: The n tokens; token tokens[i] has id i + 1.
  """
  tokens: tuple[str, ...]

  pad = 0

  @property
  def oov(self) -> int:
    return len(self.tokens) + 1

  @property
  def bos(self) -> int:
    return len(self.tokens) + 2

  @property
  def eos(self) -> int:
    return len(self.tokens) + 3

  @property
  def size(self) -> int:
    """Number of ids: the tokens and pad, oov, bos, eos."""
    return len(self.tokens) + 4


SHAKESPEARE_VOCABULARY = TokenVocabulary(tuple(SHAKESPEARE_CHARS))


def byte_ids(vocabulary: TokenVocabulary) -> np.ndarray:
  """The id of each of the 256 byte values (oov for bytes not in it)."""
  ids = np.full(256, vocabulary.oov, np.int64)
  for i, char in enumerate(vocabulary.tokens):
    ids[ord(char)] = i + 1
  return ids


_SHAKESPEARE_BYTE_IDS = byte_ids(SHAKESPEARE_VOCABULARY)


def _framed(ids: tf.Tensor, vocabulary: TokenVocabulary) -> tf.Tensor:
  return tf.concat([
      tf.constant([vocabulary.bos], tf.int64), ids,
      tf.constant([vocabulary.eos], tf.int64)
  ], 0)


def shakespeare_ids(element: dict[str, tf.Tensor]) -> tf.Tensor:
  """A snippet -> int64 [bos, character ids..., eos].

  TFF splits the snippet into bytes and looks each up; a 256-entry table does
  the same without a lookup-table resource.

  Args:
    element: An element of TFF's Shakespeare ClientData: {'snippets': string}.
  """
  raw = tf.io.decode_raw(element['snippets'], tf.uint8)
  ids = tf.gather(tf.constant(_SHAKESPEARE_BYTE_IDS), tf.cast(raw, tf.int32))
  return _framed(ids, SHAKESPEARE_VOCABULARY)


def stackoverflow_ids_fn(vocabulary: TokenVocabulary) -> IdsFn:
  """Returns a function: a sentence -> int64 [bos, word ids..., eos].

  Args:
    vocabulary: The words (most frequent first).
  """
  table = tf.lookup.StaticVocabularyTable(tf.lookup.KeyValueTensorInitializer(
      list(vocabulary.tokens), tf.range(len(vocabulary.tokens),
                                        dtype=tf.int64)),
                                          num_oov_buckets=1)

  def to_ids(element: dict[str, tf.Tensor]) -> tf.Tensor:
    words = tf.strings.split(tf.reshape(element['tokens'], [1]), sep=' ').values
    # TFF's ids: the table's 0..n-1 plus one (0 is the padding), and its one
    # out-of-vocabulary bucket n becomes n + 1.
    return _framed(table.lookup(words) + 1, vocabulary)

  return to_ids


def token_windows(ids: tf.data.Dataset,
                  *,
                  window: int,
                  next_token_labels: bool = False) -> tf.data.Dataset:
  """Records' token ids -> (float32 [window] ids, int32 next id).

  Args:
    ids: One int64 vector of ids per record, in order.
    window: W, the number of ids before each label.
    next_token_labels: Label with the next id at every position, int32
      [window] (the window's last W ids), instead of the one id after it.

  Returns:
    The windows of W + 1 ids cut from the records' joined stream, the last one
    left-padded with 0 (see the module docstring).
  """
  length = window + 1
  labels = slice(1, None) if next_token_labels else window

  def split(chunk):
    padding = tf.zeros([length - tf.shape(chunk)[0]], tf.int64)
    chunk = tf.reshape(tf.concat([padding, chunk], 0), [length])
    return tf.cast(chunk[:window], tf.float32), tf.cast(chunk[labels], tf.int32)

  return ids.unbatch().batch(length).map(split)


def labels_phrase(window: int, next_token_labels: bool) -> str:
  """How windows are labelled, for the data banners."""
  if next_token_labels:
    return (f'labels: the next token at each of the {window} positions of a '
            f'window of {window + 1} ids')
  return f'one label per window of {window + 1} ids'


class TokenSource(benchmark_source.CachedClients):
  """A TFF text benchmark from a local cache, as next-token windows.

  Offers what training needs from a streamed source: `population`,
  `input_dim`, `num_classes`, `image_shape` (None), `vocab_size`,
  `client_sizes()`, `client_dataset(i)`, `test_dataset()` and the banner.

  Attributes:
    kind: Which of TFF's benchmarks.
    name: The `--dataset` value.
    vocabulary: The token ids.
    window: W, the ids before each label.
    client_ids: Training client ids, in TFF's (sorted) order.
    input_dim: W.
    num_classes: The vocabulary's size (labels are token ids).
    vocab_size: The same: features are token ids in [0, vocab_size).
    image_shape: None: not images.
    label_kind: One label (the next token's id) per window, or the next
      token at every position (`next_token_labels`).
  """

  image_shape = None

  def __init__(self,
               kind: tff_datasets.TffDataset,
               *,
               name: str,
               data_dir: str,
               vocabulary: TokenVocabulary,
               to_ids: IdsFn,
               window: int,
               record_noun: str,
               test_users: Optional[int] = None,
               test_windows_per_user: Optional[int] = None,
               next_token_labels: bool = False):
    """Loads the benchmark's client data (TFF's loader, no download).

    Args:
      kind: Which benchmark.
      name: The `--dataset` value.
      data_dir: The cache directory.
      vocabulary: The token ids.
      to_ids: A record -> its int64 ids, [bos, ..., eos].
      window: W.
      record_noun: What a record is ('snippets', 'sentences').
      test_users: Evaluate on this many test clients (a fixed seeded
        choice); None: all.
      test_windows_per_user: At most this many windows of each test client;
        None: all.
      next_token_labels: Label every position (`token_windows`).

    Raises:
      MissingDatasetError, CorruptDatasetError: From `tff_datasets`.
    """
    self.kind = kind
    self.name = name
    self.vocabulary = vocabulary
    self.window = window
    self._to_ids = to_ids
    self._record_noun = record_noun
    self._test_windows_per_user = test_windows_per_user
    self._next_token_labels = next_token_labels
    self.label_kind = (LabelKind.NEXT_TOKENS
                       if next_token_labels else LabelKind.SINGLE)
    self._train, self._test = tff_datasets.load_tff_dataset(kind,
                                                            data_dir=data_dir)
    self.client_ids = list(self._train.client_ids)
    self._test_ids = benchmark_source.sample_client_ids(
        list(self._test.client_ids), test_users)
    self.input_dim = window
    self.num_classes = vocabulary.size
    self.vocab_size = vocabulary.size
    self._sizes = self._train.client_sizes()

  def _windows(self, records: tf.data.Dataset) -> tf.data.Dataset:
    return token_windows(records.map(self._to_ids),
                         window=self.window,
                         next_token_labels=self._next_token_labels)

  def client_dataset(self, index: int) -> tf.data.Dataset:
    """The windows of client `index` (unbatched): (features, label)."""
    return self._windows(self._train.dataset(self.client_ids[int(index)]))

  def test_dataset(self) -> tf.data.Dataset:
    """The server's held-out windows, client after client."""
    return self._test.clients_dataset(self._test_ids,
                                      transform=self._windows,
                                      per_client=self._test_windows_per_user)

  def describe(self) -> str:
    s = self.statistics()
    if self._test_windows_per_user is None and (len(self._test_ids) == len(
        self._test.client_ids)):
      test = "the file's test split, every client's windows"
    else:
      test = (f"{len(self._test_ids)} of the test split's "
              f'{len(self._test.client_ids)} clients (fixed seed), at most '
              f'{self._test_windows_per_user} windows each')
    return '\n'.join([
        f"Federated data '{s['name']}': {s['clients']} clients "
        '(the population N for privacy accounting)',
        f"  {tff_datasets.title(self.kind)} from TFF's cache file",
        f"  train {self._record_noun}: {s['examples_total']}; per client min "
        f"{s['examples_per_client_min']}, median "
        f"{s['examples_per_client_median']:g}, max "
        f"{s['examples_per_client_max']}",
        f'  features: the {self.window} token ids before the label '
        f'(vocabulary of {self.vocab_size} ids: '
        f'{len(self.vocabulary.tokens)} tokens + pad, oov, bos, eos), '
        f'{labels_phrase(self.window, self._next_token_labels)} of a '
        'client\'s text',
        f'  test: {test} (server-side evaluation only)',
    ])


def shakespeare_source(*,
                       data_dir: str,
                       next_token_labels: bool = False) -> TokenSource:
  """Shakespeare next-character windows from `data_dir`'s shakespeare.sqlite."""
  return TokenSource(tff_datasets.TffDataset.SHAKESPEARE,
                     name='shakespeare',
                     data_dir=data_dir,
                     vocabulary=SHAKESPEARE_VOCABULARY,
                     to_ids=shakespeare_ids,
                     window=SHAKESPEARE_WINDOW,
                     record_noun='snippets',
                     next_token_labels=next_token_labels)


def stackoverflow_vocabulary(*, data_dir: str) -> TokenVocabulary:
  """The 10,000 most frequent words of TFF's Stack Overflow word counts."""
  counts = tff_datasets.load_stackoverflow_word_counts(
      data_dir=data_dir, vocab_size=STACKOVERFLOW_VOCAB_WORDS)
  return TokenVocabulary(tuple(counts))


def stackoverflow_nwp_source(*,
                             data_dir: str,
                             next_token_labels: bool = False) -> TokenSource:
  """Stack Overflow next-word windows from `data_dir`.

  The vocabulary (`<data_dir>/datasets/stackoverflow.word_count.tar.bz2`) is
  read before the database: it is small, so a missing or wrong file is
  reported at once, before the 342,477 training clients' ids are listed.
  """
  vocabulary = stackoverflow_vocabulary(data_dir=data_dir)
  return TokenSource(tff_datasets.TffDataset.STACKOVERFLOW_WORD,
                     name='stackoverflow_nwp',
                     data_dir=data_dir,
                     vocabulary=vocabulary,
                     to_ids=stackoverflow_ids_fn(vocabulary),
                     window=STACKOVERFLOW_WINDOW,
                     record_noun='sentences',
                     test_users=STACKOVERFLOW_TEST_USERS,
                     test_windows_per_user=STACKOVERFLOW_TEST_EXAMPLES_PER_USER,
                     next_token_labels=next_token_labels)


def load_shakespeare(request: registry.LoadRequest) -> TokenSource:
  """`--dataset=shakespeare` (a row of `tff_dp.data.registry`)."""
  return shakespeare_source(data_dir=request.data_dir,
                            next_token_labels=request.next_token_labels)


def load_stackoverflow_nwp(request: registry.LoadRequest) -> TokenSource:
  """`--dataset=stackoverflow_nwp` (a row of `tff_dp.data.registry`)."""
  return stackoverflow_nwp_source(data_dir=request.data_dir,
                                  next_token_labels=request.next_token_labels)
