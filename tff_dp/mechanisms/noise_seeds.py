"""Seeds of DP noise: secret keys, fresh per execution, inside TF computations.

TensorFlow's unseeded random ops (TF Privacy's Gaussian queries use them) and
`NonDeterministicInts` all draw from one process-wide mt19937_64 that TF seeds
with 32 bits of /dev/urandom (tsl/platform/random.cc, `random::New64`): an
adversary who guessed those 32 bits could regenerate, and subtract, every
noise draw of a run. So every noise draw in tff-dp comes from TF's stateless
Philox generator (Philox4x32-10; Salmon et al. 2011, "Parallel random numbers:
as easy as 1, 2, 3") under a seed built from a 128-bit key drawn from the
operating system (`tff_dp.privacy.run_secrets.new_noise_key`) when the process is
built:

  seed = (key[0], key[1] XOR nonce)

key[0] is the 64-bit Philox key, key[1] selects a 2**64-block region of its
128-bit counter space, and the nonce (from `NonDeterministicInts`, new on
every execution of the computation, i.e. per round and per client) moves each
execution to its own region, so draws never repeat. The adversary must guess
the 128 key bits; the nonce only has to be unique, not secret. Philox is a
statistical generator, not a cryptographic one; the privacy statement says
so. The key is a constant of the serialized computation, which lives on our
own worker and is never written to disk (`tff_dp.privacy.run_secrets`).
"""

from typing import Sequence

import tensorflow as tf


def execution_seed(key: Sequence[int]) -> tf.Tensor:
  """A [2] int64 stateless seed, secret and fresh for this execution.

  Args:
    key: Two signed int64 (`tff_dp.privacy.run_secrets.new_noise_key`).

  Returns:
    A seed for `tf.random.stateless_*` ops; split it with
    `tf.random.experimental.stateless_split` for several draws.
  """
  key = tf.constant(list(key), dtype=tf.int64, shape=[2])
  nonce = tf.raw_ops.NonDeterministicInts(shape=[], dtype=tf.int64)
  return tf.stack([key[0], tf.bitwise.bitwise_xor(key[1], nonce)])


def execution_seeds(key: Sequence[int], num: int) -> list[tf.Tensor]:
  """`num` independent [2] seeds for one execution (e.g. one per tensor)."""
  seed = execution_seed(key)
  return tf.unstack(tf.random.experimental.stateless_split(seed, num=num))
