"""Train tff-dp from Python on your own Keras model and your own clients.

Run: .venv/bin/python -m examples.train_from_python [--rounds=N]

The clients are a `tff.simulation.datasets.ClientData` (here scikit-learn's
handwritten digits split into 100 clients, as a stand-in for yours), the
test set is data the server may use publicly (examples held out before the
split, no client's), and the model is an uncompiled Keras model producing
logits. DP-FedAvg with adaptive clipping, as in the main job.
"""

import argparse
import collections

from sklearn import datasets
import tensorflow as tf
import tensorflow_federated as tff

import tff_dp


def digits_client_data(num_clients: int = 100):
  """(ClientData of `num_clients` clients, the public test set)."""
  digits = datasets.load_digits()
  x = (digits.data / 16.0).astype('float32')
  y = digits.target.astype('int32')
  test, train = slice(0, 297), slice(297, None)
  x_train, y_train = x[train], y[train]
  per_client = len(x_train) // num_clients
  clients = {
      f'client_{i}':
          collections.OrderedDict(x=x_train[i * per_client:(i + 1) *
                                            per_client],
                                  y=y_train[i * per_client:(i + 1) *
                                            per_client])
      for i in range(num_clients)
  }
  test_data = tf.data.Dataset.from_tensor_slices((x[test], y[test]))
  return tff.simulation.datasets.TestClientData(clients), test_data


def my_model() -> tf.keras.Model:
  return tf.keras.Sequential([
      tf.keras.layers.InputLayer(input_shape=(64,)),
      tf.keras.layers.Dense(32, activation='relu'),
      tf.keras.layers.Dense(10),  # Logits.
  ])


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('--rounds', type=int, default=30)
  parser.add_argument('--output_dir', default='runs')
  args = parser.parse_args()
  client_data, test_data = digits_client_data()
  result = tff_dp.train(keras_model_fn=my_model,
                        client_data=client_data,
                        test_data=test_data,
                        rounds=args.rounds,
                        clients_per_round=20,
                        output_dir=args.output_dir)
  print(f'epsilon {result.epsilon:.3g} (delta {result.summary.delta:g}), '
        f'accuracy {result.accuracy:.3f} after {len(result.history)} rounds')
  model = result.keras_model()  # Ready to use, e.g. model.predict(...).
  print(f'trained model: {model.count_params()} parameters; run directory '
        f'{result.run_dir}')


if __name__ == '__main__':
  main()
