"""A TFF TensorFlow computation run in-process as TFF's worker runs it.

TFF's compiler (`tff.backends.native.desugar_and_transform_to_native`, the
`compiler_fn` of tff-dp's execution context) runs Grappler on each
TensorFlow block before sending it, and disables Grappler in its call ops;
the worker then runs the block in a `tensorflow::Session` with runtime
Grappler off and optimizer level L0
(`tensorflow_federated/cc/core/impl/executors/session_provider.cc`,
`get_session_options`). `session_runner` runs that same block in a
`tf.compat.v1.Session` of this process, with those options or TF's
defaults, so that `benchmarks.worker_graph` can tell the worker binary from
the graph and the options.
"""

from typing import Any

import tensorflow as tf
import tensorflow_federated as tff
from tensorflow_federated.python.core.impl.computation import computation_impl
from tensorflow_federated.python.tensorflow_libs import serialization_utils


def _tensorflow_blocks(message) -> list[Any]:
  """Every `TensorFlow` block inside a computation proto, depth first."""
  found = []
  for field, value in message.ListFields():
    values = value if field.label == field.LABEL_REPEATED else [value]
    for v in values:
      if not hasattr(v, 'ListFields'):
        continue
      if type(v).__name__ == 'TensorFlow':
        found.append(v)
      else:
        found.extend(_tensorflow_blocks(v))
  return found


def compiled_block(comp) -> Any:
  """The TF block TFF's compiler (tff-dp's `execution_context`) sends."""
  native = tff.backends.native.desugar_and_transform_to_native(comp)
  blocks = _tensorflow_blocks(
      computation_impl.ConcreteComputation.get_proto(native))
  if len(blocks) != 1:
    raise ValueError(f'expected one TensorFlow block, got {len(blocks)}')
  return blocks[0]


def _binding_names(binding) -> list[str]:
  kind = binding.WhichOneof('binding')
  if kind == 'tensor':
    return [binding.tensor.tensor_name]
  if kind == 'struct':
    return [n for e in binding.struct.element for n in _binding_names(e)]
  if kind is None:
    return []
  raise ValueError(f'binding {kind} not supported here')


def tff_session_config(grappler: bool) -> tf.compat.v1.ConfigProto:
  """TFF's worker session options (session_provider.cc), or TF's default."""
  config = tf.compat.v1.ConfigProto(allow_soft_placement=True)
  if not grappler:
    config.graph_options.rewrite_options.disable_meta_optimizer = True
    config.graph_options.optimizer_options.opt_level = (
        tf.compat.v1.OptimizerOptions.L0)
    config.graph_options.optimizer_options.global_jit_level = (
        tf.compat.v1.OptimizerOptions.OFF)
    config.experimental.optimize_for_static_graph = True
    config.experimental.disable_output_partition_graphs = True
  return config


def session_runner(block, config: tf.compat.v1.ConfigProto):
  """Runs a TFF TF block in-process as the worker's executor does."""
  graph = tf.Graph()
  with graph.as_default():
    tf.compat.v1.import_graph_def(serialization_utils.unpack_graph_def(
        block.graph_def),
                                  name='')
  session = tf.compat.v1.Session(graph=graph, config=config)
  feeds = _binding_names(block.parameter)
  fetches = _binding_names(block.result)

  def call(argument):
    values = argument if isinstance(argument, list) else [argument]
    if block.initialize_op:
      session.run(block.initialize_op, dict(zip(feeds, values)))
    out = session.run(fetches, dict(zip(feeds, values)))
    return out[0] if block.result.WhichOneof('binding') == 'tensor' else out

  return call, session
