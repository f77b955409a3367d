"""What the start-up banner says about the data, in a run that claims DP.

The banner is printed, and often saved with a run's published outputs. In a
DP run it therefore states only what the guarantee treats as public: the
population size N, the shape of the features and labels, and where the
server's test set comes from. Per-client example counts, label histograms and
the number of examples are statistics of the clients' data, computed without
noise: they are printed (by each source's `describe()`) only in runs that
claim no privacy. Pure Python.
"""

from typing import Any, Optional

from tff_dp.data import loading


def public_description(data: Any,
                       *,
                       dataset: loading.Dataset,
                       held_out_clients: Optional[int] = None) -> str:
  """The banner of a DP run: public facts about `data` only.

  Args:
    data: Loaded federated data (training clients only).
    dataset: Its `--dataset`.
    held_out_clients: Clients held out for federated evaluation, if any.

  Returns:
    Lines of text, without a trailing newline.
  """
  held = ('' if held_out_clients is None else
          f'; {held_out_clients} more held out for federated evaluation')
  features = f'features: {data.input_dim}'
  if data.image_shape is not None:
    features += f' ({"x".join(str(n) for n in data.image_shape)} images)'
  if data.vocab_size is not None:
    features += f' (token ids, vocabulary {data.vocab_size})'
  origin = loading.test_set_origin(dataset)
  return '\n'.join([
      f"Federated data '{dataset.value}': {data.population} clients (the "
      f'population N for privacy accounting, assumed public){held}',
      f'  {features}; classes: {data.num_classes} '
      f'({data.label_kind.value} labels)',
      f'  test set: {origin.describe()}',
      '  (statistics of the clients\' data are not printed in a DP run: '
      'they are not covered by the guarantee)',
  ])
