"""Pure computations (TF or numpy functions), testable without `fit` or Keras glue."""
