"""Where each dataset's server-side test set comes from, and what that allows.

Metrics of the DP model on a test set are covered by the guarantee only if
the test set is public: then they are post-processing of a DP release and of
data the adversary may hold anyway. Evaluation on data of the private
population (clients held out of training, or rows of training clients) is an
un-noised function of that data, so its metrics are released only under
`nonprivate/` and only on request, never as covered.

* `HELD_OUT_BEFORE_PARTITION`: the offline datasets (digits, breast cancer,
  Synthetic): the program holds the test examples out BEFORE it splits the
  rest into clients, so no client ever owns them. Public by construction.
* `PUBLISHED_TEST_SPLIT`: TFF's EMNIST, CIFAR-100, Shakespeare and Stack
  Overflow test splits. They are published (anyone can download them), which
  is why the literature reports them as DP results (e.g. TFF's DP tutorial);
  note that in EMNIST and Shakespeare they are written by the same users as
  the training data, so in a deployment the test set must be data you could
  publish.
* `PRIVATE_POPULATION`: a user's own data imported with `./run.sh
  import-data` (`--test_split=clients` holds out whole clients, `rows` rows of
  every client): its test set belongs to the people the data describe.
* `DECLARED_PUBLIC`: the test set passed from Python with the caller's own
  clients (`tff_dp.train(client_data=..., test_data=...)`): public because
  the caller says so.
Which dataset has which origin is a column of `tff_dp.data.registry`.
Pure Python.
"""

import enum


class TestSetOrigin(enum.Enum):
  """Where a dataset's server-side test set comes from (module docstring)."""
  HELD_OUT_BEFORE_PARTITION = 'held_out_before_partition'
  PUBLISHED_TEST_SPLIT = 'published_test_split'
  PRIVATE_POPULATION = 'private_population'
  DECLARED_PUBLIC = 'declared_public'

  @property
  def public(self) -> bool:
    """Whether metrics on this test set may be released as covered."""
    return self is not TestSetOrigin.PRIVATE_POPULATION

  def describe(self) -> str:
    """One sentence for the privacy statement."""
    return _WORDS[self]


_WORDS = {
    TestSetOrigin.HELD_OUT_BEFORE_PARTITION:
        ('examples the program held out before it split the data into '
         'clients (no client owns them: public by construction)'),
    TestSetOrigin.PUBLISHED_TEST_SPLIT:
        ("the dataset's published test split, treated as public (its authors "
         'published it; in a deployment, evaluate on data you could publish)'),
    TestSetOrigin.PRIVATE_POPULATION:
        ('the test split of the imported client data, which belongs to the '
         'private population (held-out clients or rows of training clients): '
         'NOT public'),
    TestSetOrigin.DECLARED_PUBLIC:
        ('the test set passed from Python with the clients (test_data), '
         'declared public by the caller; if it is data of the clients the '
         'guarantee protects, evaluation on it is NOT covered'),
}
