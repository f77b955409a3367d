"""TFF's Stack Overflow tag prediction as a (multi-label) training source.

Federated Stack Overflow (TFF's own; Reddi et al. 2021, "Adaptive Federated
Optimization", ICLR) has one client per user (342,477 in the training
split), each holding that user's posts (questions and answers). The tag
prediction task is the one of TFF's baselines
(`tff.simulation.baselines.stackoverflow.create_tag_prediction_task`, after
Reddi et al.'s "Stack Overflow LR"): from a bag of words of a post, predict
its tags. One example is one post:

* features (float32 [10,000]): TFF's `tag_prediction_preprocessing.
  build_to_ids_fn` (TFF 0.87) exactly: the post's `tokens` and `title`,
  joined by a space, split on whitespace; each word that is one of the
  10,000 most frequent words of TFF's word counts is counted, words outside
  them (oov) are dropped, and the counts are divided by the number of
  in-vocabulary words (all zeros if there is none). Computed with a bincount
  where TFF sums one-hot rows ([words, 10,000] floats per post): the same
  float32 values, without the one-hot matrix. (google-research/federated's
  older version of this task divided by all words, oov included.)
* labels (float32 [500], `labels.LabelKind.MULTI_HOT`): the post's `tags`,
  split on '|', counted over the 500 most frequent tags of TFF's tag counts;
  other tags are dropped. A tag listed twice would count 2, as in TFF; Stack
  Overflow lists each tag of a post once.

The model is logistic regression with one sigmoid per tag (`--model=
logistic_regression`; TFF's baseline model), trained on the binary
cross-entropy, and reports TFF's metrics: precision (probability > 0.5) and
recall of the 5 most probable tags (`tff_dp.algorithms.models`).

Cap on examples per user: users hold up to tens of thousands of posts, so,
as Reddi et al.'s code (google-research/federated `optimization/tasks/
stackoverflow_tp.py`, `max_elements_per_user=1000`), a user trains on the
FIRST 1,000 of its posts in the file's order (`dataset.take` before the
round's shuffle and local epochs). TFF's own `ClientSpec.max_elements` has
no default (None: no cap) and applies its `take` after shuffling and
repeating; taking first keeps a user's examples the same every round, so
`client_sizes()` (min(posts, 1,000)) is exact, which the shuffle buffer and
example-level DP-SGD's accounting rely on. The cap changes no accounting of
user-level DP: the unit of privacy is still the user, all of whose data may
change. Federated evaluation (`--evaluation=federated`) reads the held-out
users' capped posts too.

The server's held-out set is the bounded, seeded sample of the test split
that `stackoverflow_nwp` uses (`token_sources.STACKOVERFLOW_TEST_USERS`
users, at most `STACKOVERFLOW_TEST_EXAMPLES_PER_USER` posts of each): at most
10,000 posts, the size of Reddi et al.'s validation set. The server's
evaluation caches them as dense float32: up to 400 MB.

Both vocabularies are TFF's published word and tag counts (computed by TFF
over the data), used as public side information as in TFF's baselines and
the next-word task; they are read first, being small, so a missing or wrong
file is reported before the 342,477 training users are listed.
"""

from typing import Callable, Optional, Sequence

import numpy as np
import tensorflow as tf

from tff_dp.data import benchmark_source
from tff_dp.data import registry
from tff_dp.data import tff_datasets
from tff_dp.data import token_sources
from tff_dp.data.labels import LabelKind

# TFF's tag vocabulary size (constants.DEFAULT_TAG_VOCAB_SIZE); the word
# vocabulary is the next-word task's (token_sources.STACKOVERFLOW_VOCAB_WORDS).
STACKOVERFLOW_TAGS = 500
# Reddi et al.'s cap on a user's training posts (see the module docstring).
STACKOVERFLOW_TAG_MAX_POSTS_PER_USER = 1_000

# A post (dict of string tensors) -> (features, labels).
ExampleFn = Callable[[dict[str, tf.Tensor]], tuple[tf.Tensor, tf.Tensor]]


def _counts(ids: tf.Tensor, size: int) -> tf.Tensor:
  """float32 [size]: how often each id in [0, size) occurs in `ids`.

  Ids >= size (the lookup table's oov bucket) are not counted, as TFF's
  one-hot rows of depth `size` (or `size + 1`, then cut) leave them out.
  """
  counts = tf.math.bincount(tf.cast(ids, tf.int32),
                            minlength=size + 1,
                            maxlength=size + 1,
                            dtype=tf.float32)[:size]
  # The static shape (bincount's is unknown) is part of the model's input
  # spec, which TFF checks every client dataset against.
  return tf.reshape(counts, [size])


def _table(keys: Sequence[str]) -> tf.lookup.StaticVocabularyTable:
  # TFF's tables: key i -> i, everything else -> len(keys) (one oov bucket).
  return tf.lookup.StaticVocabularyTable(tf.lookup.KeyValueTensorInitializer(
      list(keys), tf.range(len(keys), dtype=tf.int64)),
                                         num_oov_buckets=1)


def tag_example_fn(words: Sequence[str], tags: Sequence[str]) -> ExampleFn:
  """Returns a function: a Stack Overflow post -> (bag of words, tags).

  Args:
    words: The word vocabulary (most frequent first).
    tags: The tag vocabulary (most frequent first).

  Returns:
    post -> (float32 [len(words)], float32 [len(tags)]), equal to TFF's
    `tag_prediction_preprocessing.build_to_ids_fn(words, tags)(post)` (see
    the module docstring). A post is an element of TFF's Stack Overflow
    ClientData: a dict with string scalars 'tokens', 'title' and 'tags'.
  """
  word_table = _table(words)
  tag_table = _table(tags)
  num_words, num_tags = len(words), len(tags)

  def to_example(post):
    text = tf.strings.join([post['tokens'], post['title']], separator=' ')
    counts = _counts(word_table.lookup(tf.strings.split(text)), num_words)
    features = tf.math.divide_no_nan(counts, tf.reduce_sum(counts))
    labels = _counts(tag_table.lookup(tf.strings.split(post['tags'], sep='|')),
                     num_tags)
    return features, labels

  return to_example


class StackOverflowTagSource(benchmark_source.CachedClients):
  """Stack Overflow tag prediction from a local cache (see module doc).

  Offers what training needs from a streamed source: `population`,
  `input_dim`, `num_classes`, `image_shape` (None), `vocab_size` (None: the
  features are word frequencies, not token ids), `label_kind` (multi-hot),
  `client_sizes()`, `client_dataset(i)`, `test_dataset()` and the banner.

  Attributes:
    kind: `TffDataset.STACKOVERFLOW_TAG`.
    name: The `--dataset` value.
    words: The word vocabulary; feature i is the frequency of words[i].
    tags: The tag vocabulary; label j is tags[j].
    max_posts_per_user: The cap on each user's training posts.
    client_ids: Training user ids, in TFF's (sorted) order.
    input_dim: The number of words.
    num_classes: The number of tags.
  """

  image_shape = None
  vocab_size = None
  label_kind = LabelKind.MULTI_HOT

  def __init__(self, *, data_dir: str, words: Sequence[str],
               tags: Sequence[str], max_posts_per_user: int,
               test_users: Optional[int], test_posts_per_user: Optional[int]):
    """Loads the users' client data (TFF's loader, no download).

    Args:
      data_dir: The cache directory.
      words: The word vocabulary.
      tags: The tag vocabulary.
      max_posts_per_user: Train on at most this many (the first) posts of
        each user.
      test_users: Evaluate on this many test users (a fixed seeded choice);
        None: all.
      test_posts_per_user: At most this many posts of each test user; None:
        all.

    Raises:
      MissingDatasetError, CorruptDatasetError: From `tff_datasets`.
    """
    self.kind = tff_datasets.TffDataset.STACKOVERFLOW_TAG
    self.name = 'stackoverflow_tag'
    self.words = tuple(words)
    self.tags = tuple(tags)
    self.max_posts_per_user = int(max_posts_per_user)
    self._test_posts_per_user = test_posts_per_user
    self._to_example = tag_example_fn(self.words, self.tags)
    self._train, self._test = tff_datasets.load_tff_dataset(self.kind,
                                                            data_dir=data_dir)
    self.client_ids = list(self._train.client_ids)
    self._test_ids = benchmark_source.sample_client_ids(
        list(self._test.client_ids), test_users)
    self.input_dim = len(self.words)
    self.num_classes = len(self.tags)
    self._posts = self._train.client_sizes()
    self._sizes = np.minimum(self._posts, self.max_posts_per_user)

  def client_dataset(self, index: int) -> tf.data.Dataset:
    """The first `max_posts_per_user` posts of user `index` (unbatched):
    (features, labels)."""
    return self._train.dataset(self.client_ids[int(index)]).take(
        self.max_posts_per_user).map(self._to_example)

  def test_dataset(self) -> tf.data.Dataset:
    """The server's held-out posts, user after user."""
    return self._test.clients_dataset(
        self._test_ids,
        transform=lambda posts: posts.map(self._to_example),
        per_client=self._test_posts_per_user)

  def describe(self) -> str:
    s = self.statistics()
    return '\n'.join([
        f"Federated data '{s['name']}': {s['clients']} users (the population "
        'N for privacy accounting)',
        f"  {tff_datasets.title(self.kind)} from TFF's cache file",
        f"  train posts: {s['examples_total']} used of "
        f'{int(self._posts.sum())} (the first {self.max_posts_per_user} of '
        f"each user); per user min {s['examples_per_client_min']}, median "
        f"{s['examples_per_client_median']:g}, max "
        f"{s['examples_per_client_max']}",
        f'  features: bag of words (frequencies) over {self.input_dim} words '
        f'of title and body; labels: multi-hot over {self.num_classes} tags',
        f"  test: {len(self._test_ids)} of the test split's "
        f'{len(self._test.client_ids)} users (fixed seed), at most '
        f'{self._test_posts_per_user} posts each (server-side evaluation '
        'only)',
    ])


def stackoverflow_tag_source(*, data_dir: str) -> StackOverflowTagSource:
  """Stack Overflow tag prediction from `data_dir` (see the module doc).

  Reads `<data_dir>/datasets/stackoverflow.word_count.tar.bz2` and
  `stackoverflow.tag_count.tar.bz2`, then `<data_dir>/stackoverflow.sqlite`.
  """
  words = token_sources.stackoverflow_vocabulary(data_dir=data_dir).tokens
  tags = list(tff_datasets.load_stackoverflow_tag_counts(
      data_dir=data_dir))[:STACKOVERFLOW_TAGS]
  return StackOverflowTagSource(
      data_dir=data_dir,
      words=words,
      tags=tags,
      max_posts_per_user=STACKOVERFLOW_TAG_MAX_POSTS_PER_USER,
      test_users=token_sources.STACKOVERFLOW_TEST_USERS,
      test_posts_per_user=token_sources.STACKOVERFLOW_TEST_EXAMPLES_PER_USER)


def load(request: registry.LoadRequest) -> StackOverflowTagSource:
  """`--dataset=stackoverflow_tag` (a row of `tff_dp.data.registry`)."""
  return stackoverflow_tag_source(data_dir=request.data_dir)
