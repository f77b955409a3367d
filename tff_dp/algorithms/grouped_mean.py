"""Non-private FedAvg on the grouped path: the clients' (weighted) mean.

FedAvg (McMahan et al. 2017, "Communication-Efficient Learning of Deep
Networks from Decentralized Data") averages the updates of the clients that
reported, weighted by their data size n_k, or uniformly. The reference runs
TFF's builders with TFF's mean factories (`tff_dp.algorithms.learning_process.
build_model_aggregator` with no DP settings): `build_weighted_fed_avg`'s
`MeanFactory` (sum of n_k * update over sum of n_k) for
`--client_weighting=num_examples`, `UnweightedMeanFactory` (sum of updates
over the number of clients) for uniform and capped weights. Capped weights
scale each update by min(n_k / n_cap, 1) in the client
(`grouped_client_options.capped_weight_scale`) before the uniform mean, as
the reference's `tff_dp.mechanisms.weighting` does before its mean.

Here the mean is TF Privacy's `NoPrivacyAverageQuery` (no clipping, no
noise), so the grouped process (`tff_dp.algorithms.grouped_fedavg`) sums its
preprocessed records per group and across groups as for the DP queries. Each
simulated client's record carries its weight, chosen as TFF's client works
choose it (`model_delta_client_work._choose_client_weight`, FedSGD's client
update): 0 for a client whose update was not finite (its update is zeroed),
else n_k (the examples it processed, over all local epochs) or 1.

Dividing by the number of clients or the sum of n_k releases both: this is
allowed only where no DP claim is made (`tff_dp.config_checks` refuses
num_examples weighting with any mechanism). The query's DP event
(`NonPrivateDpEvent`) is discarded by the process, which keeps no
aggregator state; the run's ledger is the mechanism row's
(`tff_dp.mechanisms.no_central_noise`: zero noise, infinite epsilon).

One deliberate difference from TFF's mean factories: a round with no client
(possible under Poisson sampling) gives a zero mean here, where TFF's
divides 0 by 0 and turns the model into NaN.
"""

import dp_accounting
import tensorflow as tf
import tensorflow_privacy as tfp


class ClientMeanQuery(tfp.NoPrivacyAverageQuery):
  """The mean of the clients' updates, weighted by n_k or uniformly.

  Attributes:
    by_num_examples: Whether a client's weight is n_k (else 1).
  """

  def __init__(self, *, by_num_examples: bool):
    super().__init__()
    self.by_num_examples = bool(by_num_examples)

  def client_weight(self, num_examples, finite) -> tf.Tensor:
    """A client's weight, as TFF's client work chooses it (float32).

    Args:
      num_examples: The examples the client processed (n_k x epochs).
      finite: Whether the client's update was finite (else it was zeroed).
    """
    weight = (tf.cast(num_examples, tf.float32)
              if self.by_num_examples else tf.constant(1.0))
    return tf.where(finite, weight, tf.zeros_like(weight))

  def get_noised_result(self, sample_state, global_state):
    """The weighted mean (zero if the weights sum to 0), as TFF's mean."""
    sum_state, denominator = sample_state
    result = tf.nest.map_structure(
        lambda t: tf.math.divide_no_nan(t, tf.cast(denominator, t.dtype)),
        sum_state)
    return result, global_state, dp_accounting.NonPrivateDpEvent()


def preprocess_record(query: tfp.DPQuery, params, update, *, num_examples,
                      finite):
  """One simulated client's record: `query.preprocess_record`, with the
  client's weight for a `ClientMeanQuery`.

  Args:
    query: The grouped process's query.
    params: The query's sample params.
    update: The client's sanitized update.
    num_examples: The examples the client processed.
    finite: Whether its update was finite before sanitizing.
  """
  if not isinstance(query, ClientMeanQuery):
    return query.preprocess_record(params, update)
  return query.preprocess_record(params,
                                 update,
                                 weight=query.client_weight(
                                     num_examples, finite))


def sole_query(query: ClientMeanQuery, *, dp_factory, local_dp_factory,
               example_dp_settings) -> ClientMeanQuery:
  """`query`, checked to be the process's only aggregation.

  Raises:
    TypeError: If `query` is not a `ClientMeanQuery`, or a DP mechanism is
      given too (their sum must not be divided by a data-dependent count).
  """
  if not isinstance(query, ClientMeanQuery):
    raise TypeError('mean_query must be a tff_dp.algorithms.grouped_mean.'
                    f'ClientMeanQuery, got {type(query).__name__}')
  if (dp_factory is not None or local_dp_factory is not None or
      example_dp_settings is not None):
    raise TypeError('mean_query (non-private FedAvg) takes no DP factory, '
                    'local DP or example-level DP')
  return query
