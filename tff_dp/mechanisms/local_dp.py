"""Local differential privacy: each client clips and noises its own update.

In the local model (Kasiviswanathan et al. 2008, "What can we learn
privately?"; Duchi, Jordan, Wainwright 2013, "Local privacy and statistical
minimax rates") the server is not trusted: every client randomizes its model
update BEFORE it leaves the client, so the privacy of a client does not depend
on the server, on secure aggregation, or on the other clients. Here that is a
`tff.federated_map` of a TensorFlow computation at `tff.CLIENTS`, placed before
any federated aggregation; the noised updates are then aggregated by an inner
factory (by default: summed and divided by the FIXED `clients_per_round`), which
may be a central DP factory that adds noise again on the server.

Mechanisms (`LocalMechanism`), with C the clip norm:

* LAPLACE: the update, all tensors together, is clipped to L1 norm C, and
  i.i.d. Laplace noise of scale b = 2 C / epsilon_local is added per
  coordinate (Dwork, McSherry, Nissim, Smith 2006, "Calibrating noise to
  sensitivity in private data analysis"). In local DP any two inputs of a
  client are neighbours, so the L1 sensitivity is the diameter 2 C of the
  clipping ball, not C: scale C / epsilon_local would only be
  2 epsilon_local-LDP.
* GAUSSIAN: global L2 clip C and N(0, (z C)^2) per coordinate, i.e. the
  Gaussian mechanism with L2 sensitivity 2 C and noise multiplier z / 2.

The guarantee and its composition over a client's participations are in
`tff_dp.privacy.local_accounting`.

Implementation choices (why):

* A client whose update has a NaN or infinite entry sends zeros, clipped and
  noised like any other update. This is a function of the client's own input
  only, so the analysis is unchanged, and the result reveals it only through
  the noise. (`tf.clip_by_global_norm` would turn an infinite norm into NaN
  everywhere.) Norms are computed in float64 after scaling by the largest
  magnitude, so finite entries such as 1e20 (whose square overflows float32)
  are clipped, not turned into inf. Float32 updates, widened to float64,
  cannot overflow, so for them the plain norm is used and a non-finite norm
  is what zeroes the update (one pass fewer per tensor, same result).
* Clipping and noise are computed in float64 and the noised update is rounded
  to its dtype once, a post-processing step. Noise is drawn in float64
  (`tff_dp.mechanisms.float64_noise`: Laplace as an exponential with a
  random sign, Gaussian by our own Box-Muller, since TF's stops at 5.68
  sigma) so the tails are not truncated at float32 resolution (about 16 b
  for Laplace). Like
  every textbook floating-point mechanism this is not protected against the
  attacks of Mironov 2012 ("On significance of the least significant bits for
  differential privacy"); no snapping is done.
* Noise is drawn by stateless Philox samplers under a seed that is fresh on
  every execution of the client computation (so per client and per round)
  and keyed by 128 bits from the operating system (`tff_dp.mechanisms.noise_seeds`). It
  is never derived from the aggregator state or any user-facing seed: in
  local DP the server is the adversary, and a seed it knows would let it
  subtract the noise. In this simulation the key is drawn by the program that
  also plays the server (and is never written anywhere); in a deployment each
  device would draw its own, and should use a cryptographically secure
  generator (Philox is a statistical one).
"""

from typing import Optional

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff

from tff_dp.mechanisms import float64_noise
from tff_dp.mechanisms import noise_seeds
from tff_dp.privacy import local_accounting
from tff_dp.privacy import run_secrets

LocalMechanism = local_accounting.LocalMechanism
LocalMechanismSpec = local_accounting.LocalMechanismSpec

# A clipped update's norm is computed in float64 with relative error far
# below this; shrinking the clipped update by it keeps the norm <= C despite
# rounding, at no practical cost.
_CLIP_SHRINK = 1.0 - 1e-9


def _global_norm(tensors: list[tf.Tensor], order: int) -> tf.Tensor:
  """L1 or L2 norm of all `tensors` together (float64, finite inputs).

  Dividing by the largest magnitude first keeps the sum from overflowing for
  any finite input (e.g. float64 entries near 1e300).
  """
  # max(., 0) because the max of an empty tensor is the lowest float.
  largest = tf.maximum(
      tf.reduce_max(tf.stack([tf.reduce_max(tf.abs(t)) for t in tensors])), 0.0)
  safe = tf.where(largest > 0, largest, tf.constant(1.0, tf.float64))
  return safe * _plain_norm([t / safe for t in tensors], order)


def _plain_norm(tensors: list[tf.Tensor], order: int) -> tf.Tensor:
  if order == 1:
    return tf.add_n([tf.reduce_sum(tf.abs(t)) for t in tensors])
  return tf.sqrt(tf.add_n([tf.reduce_sum(tf.square(t)) for t in tensors]))


# Float32 (and narrower) values widened to float64 can neither overflow a
# float64 sum of squares (3.4e38^2 = 1.2e77 per entry) nor lose their
# non-finite entries in it: their plain float64 norm is finite exactly when
# every entry is, with no rescaling.
_NARROW = (tf.float16, tf.bfloat16, tf.float32)


def _clip_factor(norm: tf.Tensor, clip: float) -> tf.Tensor:
  return tf.where(norm > clip, clip * _CLIP_SHRINK / norm,
                  tf.constant(1.0, tf.float64))


def _clipped_wide(flat: list[tf.Tensor], order: int,
                  clip: float) -> list[tf.Tensor]:
  """`flat` in float64, zeroed if any entry is not finite, then clipped."""
  wide = [tf.cast(t, tf.float64) for t in flat]
  if all(t.dtype in _NARROW for t in flat):
    norm = _plain_norm(wide, order)
    factor = _clip_factor(norm, clip)
    # tf.cond, not multiplication by 0: 0 * inf is NaN.
    return tf.cond(tf.math.is_finite(norm), lambda: [w * factor for w in wide],
                   lambda: [tf.zeros_like(w) for w in wide])
  finite = tf.reduce_all(
      tf.stack([tf.reduce_all(tf.math.is_finite(t)) for t in flat]))
  wide = [tf.where(finite, w, tf.zeros_like(w)) for w in wide]
  factor = _clip_factor(_global_norm(wide, order), clip)
  return [w * factor for w in wide]


def _clip_and_noise(value, *, mechanism: LocalMechanism, clip: float,
                    noise_scale: float, noise_key: tuple[int, int]):
  """The client-side randomizer, as TF ops on one client's update."""
  flat = tf.nest.flatten(value)
  laplace = mechanism is LocalMechanism.LAPLACE
  clipped = _clipped_wide(flat, 1 if laplace else 2, clip)
  # A fresh secret seed per execution, i.e. per client and per round (see
  # the module docstring); one independent Philox stream per tensor.
  seeds = noise_seeds.execution_seeds(noise_key, num=len(flat))
  sampler = float64_noise.laplace if laplace else float64_noise.gaussian
  out = [
      tf.cast(c + sampler(tf.shape(c), s, noise_scale), t.dtype)
      for t, c, s in zip(flat, clipped, seeds)
  ]
  return tf.nest.pack_sequence_as(value, out)


class LocalDpFactory(tff.aggregators.UnweightedAggregationFactory):
  """Clips and noises each client's update at the client, then aggregates.

  The process's state and measurements are those of the inner aggregation
  (empty for the default), so e.g. TFF's `differential_privacy.
  extract_dp_event_from_state` still works on a central DP factory's state.
  Nothing about clipped or zeroed updates is measured.

  Use `build_local_dp_factory`; the constructor takes the noise parameter
  directly.
  """

  def __init__(self,
               *,
               mechanism: LocalMechanism,
               clip: float,
               noise_scale: float,
               clients_per_round: int,
               central_factory: Optional[
                   tff.aggregators.UnweightedAggregationFactory] = None,
               _allow_zero_noise: bool = False):
    """Initializes the factory.

    Args:
      mechanism: LAPLACE (L1 clip, Laplace noise) or GAUSSIAN (L2, Gaussian).
      clip: The L1 or L2 clip norm C of each client's whole update.
      noise_scale: Laplace scale b or Gaussian std sigma, per coordinate.
      clients_per_round: Divisor of the summed noised updates when
        `central_factory` is None (expected cohort size, never the actual).
      central_factory: Unweighted factory that aggregates the noised updates
        instead, e.g. `tff.aggregators.DifferentiallyPrivateFactory.
        gaussian_fixed(...)` for local plus central noise.
      _allow_zero_noise: Tests only: accept noise_scale = 0 (not private).
    """
    if not isinstance(mechanism, LocalMechanism):
      raise ValueError(f'mechanism must be a LocalMechanism, got '
                       f'{mechanism!r}.')
    clip = local_accounting.check_positive('clip', clip)
    if not (_allow_zero_noise and noise_scale == 0):
      noise_scale = local_accounting.check_positive('noise_scale', noise_scale)
    if (isinstance(clients_per_round, bool) or
        not isinstance(clients_per_round,
                       (int, np.integer)) or clients_per_round < 1):
      raise ValueError(f'clients_per_round must be an int >= 1, got '
                       f'{clients_per_round!r}.')
    if central_factory is not None and not isinstance(
        central_factory, tff.aggregators.UnweightedAggregationFactory):
      raise ValueError(
          f'central_factory must be None or an UnweightedAggregationFactory, '
          f'got {central_factory!r}.')
    self._mechanism = mechanism
    self._clip = clip
    self._noise_scale = float(noise_scale)
    self._clients_per_round = int(clients_per_round)
    self._central_factory = central_factory
    self._noise_key = run_secrets.new_noise_key()

  @property
  def mechanism(self) -> LocalMechanism:
    return self._mechanism

  @property
  def clip(self) -> float:
    return self._clip

  @property
  def noise_scale(self) -> float:
    return self._noise_scale

  @property
  def clients_per_round(self) -> int:
    return self._clients_per_round

  def randomize(self, value):
    """The client-side clip and noise as TF ops on one update, for code
    already inside a TF computation (the grouped path's simulated clients,
    `tff_dp.algorithms.grouped_local_dp`): each execution of the ops draws
    a fresh secret seed under this factory's key."""
    return _clip_and_noise(value,
                           mechanism=self._mechanism,
                           clip=self._clip,
                           noise_scale=self._noise_scale,
                           noise_key=self._noise_key)

  @property
  def central_factory(
      self) -> Optional[tff.aggregators.UnweightedAggregationFactory]:
    """The factory that aggregates the noised updates, or None (their sum
    over `clients_per_round`)."""
    return self._central_factory

  def client_computation(self, value_type) -> tff.Computation:
    """The TF computation each client runs on its update (clip, then noise)."""
    value_type = tff.to_type(value_type)
    if not (tff.types.is_structure_of_floats(value_type) and
            isinstance(value_type, (tff.TensorType, tff.StructType))):
      raise TypeError(f'LocalDpFactory needs a tensor or structure of float '
                      f'tensors, got {value_type}.')

    @tff.tensorflow.computation(value_type)
    def clip_and_noise(value):
      return self.randomize(value)

    return clip_and_noise

  def create(self, value_type) -> tff.templates.AggregationProcess:
    """The process: clip and noise at the clients, then the inner process."""
    client_fn = self.client_computation(value_type)
    inner = (self._central_factory or
             _SumOverFixedCount(self._clients_per_round)).create(value_type)

    @tff.federated_computation(inner.next.type_signature.parameter[0],
                               tff.FederatedType(value_type, tff.CLIENTS))
    def next_fn(state, value):
      # Nothing but noised updates reaches the aggregation below.
      noised = tff.federated_map(client_fn, value)
      return inner.next(state, noised)

    return tff.templates.AggregationProcess(inner.initialize, next_fn)


class _SumOverFixedCount(tff.aggregators.UnweightedAggregationFactory):
  """Sum divided by a fixed count: dividing by the actual cohort size would
  release it without noise (and differ from the central DP path)."""

  def __init__(self, count: int):
    self._count = count

  def create(self, value_type) -> tff.templates.AggregationProcess:

    @tff.tensorflow.computation(value_type)
    def divide(total):
      return tf.nest.map_structure(lambda t: t / tf.cast(self._count, t.dtype),
                                   total)

    @tff.federated_computation()
    def init_fn():
      return tff.federated_value((), tff.SERVER)

    @tff.federated_computation(init_fn.type_signature.result,
                               tff.FederatedType(value_type, tff.CLIENTS))
    def next_fn(state, value):
      mean = tff.federated_map(divide, tff.federated_sum(value))
      return tff.templates.MeasuredProcessOutput(
          state=state,
          result=mean,
          measurements=tff.federated_value((), tff.SERVER))

    return tff.templates.AggregationProcess(init_fn, next_fn)


def build_local_dp_factory(
    *,
    mechanism: LocalMechanism,
    clip: float,
    epsilon_local: Optional[float] = None,
    noise_multiplier: Optional[float] = None,
    clients_per_round: int,
    central_factory: Optional[
        tff.aggregators.UnweightedAggregationFactory] = None,
) -> LocalDpFactory:
  """Returns the local DP aggregation factory (for `build_unweighted_fed_avg`).

  Args:
    mechanism: `LocalMechanism.LAPLACE` or `LocalMechanism.GAUSSIAN`.
    clip: L1 clip (LAPLACE) or L2 clip (GAUSSIAN) of a client's whole update.
    epsilon_local: Per-participation LDP epsilon (LAPLACE only); the Laplace
      scale is 2 clip / epsilon_local.
    noise_multiplier: z (GAUSSIAN only): noise std z * clip per coordinate.
    clients_per_round: Fixed divisor of the sum (expected cohort size).
    central_factory: Optional unweighted factory for the noised updates, e.g.
      TF Privacy's Gaussian factory for additional central noise. It sees
      locally noised updates, whose L2 norm grows like sqrt(dimension) *
      noise scale: set its clip with that in mind.

  Raises:
    ValueError: For an invalid argument; the message names it and its value.
  """
  spec = LocalMechanismSpec(mechanism=mechanism,
                            epsilon_local=epsilon_local,
                            noise_multiplier=noise_multiplier)
  return LocalDpFactory(mechanism=mechanism,
                        clip=clip,
                        noise_scale=spec.noise_scale(clip=clip),
                        clients_per_round=clients_per_round,
                        central_factory=central_factory)
