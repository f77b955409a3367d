"""Train the main job from Python in one call, as the README's API section shows.

Run: .venv/bin/python -m examples.quickstart [--rounds=N] [--flagfile=F]

`import tff_dp` is light (TensorFlow is imported when `train` runs), so
`train` can silence TensorFlow's C++ start-up log before it loads (its
`quiet` keyword, on by default; a TF_CPP_MIN_LOG_LEVEL you set is kept). A
script that imports TensorFlow itself first, as `examples.train_from_python`
does, gets that log unless it sets TF_CPP_MIN_LOG_LEVEL before the import.
"""

import argparse

import tff_dp


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('--rounds', type=int, default=50)
  parser.add_argument('--flagfile', default=None)
  parser.add_argument('--output_dir', default='runs')
  args = parser.parse_args()
  result = tff_dp.train(flagfile=args.flagfile,
                        rounds=args.rounds,
                        output_dir=args.output_dir)
  print(f'epsilon {result.epsilon:.3g} (delta {result.summary.delta:g}), '
        f'accuracy {result.accuracy:.3f} after {len(result.history)} rounds')


if __name__ == '__main__':
  main()
