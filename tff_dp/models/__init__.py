"""Model architectures beyond the built-in Keras ones, and how their parameters are trained."""
