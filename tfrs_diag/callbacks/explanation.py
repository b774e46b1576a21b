"""`ExplanationCallback`: attributions of fixed examples, tracked during training."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from tfrs_diag import summary as S
from tfrs_diag._keras import tf
from tfrs_diag.capture.checks import check_xla_compatible
from tfrs_diag.summary import workers


class ExplanationCallback(tf.keras.callbacks.Callback):
    """Explains the same examples every N epochs and writes the attributions to TensorBoard.

    At the end of every ``every_n_epochs`` epochs, runs the `tfrs_diag.explain` method
    ``method`` on ``examples`` (against ``background``) and writes, under
    ``log_dir/<run>``: the ``tfrs_diag/explain/attributions`` table record, the
    ``tfrs_diag/explain/bar_chart`` image and ``tfrs_diag/explain/mean_abs/<group>``
    scalars (see `tfrs_diag.explain.write_attribution`). The attributions are also kept in
    ``history`` as ``(epoch, Attribution)`` pairs, so you can see e.g. a feature's share
    grow as its embedding trains.

    Args:
      examples: feature dict of the examples to explain (keep it small: a handful of rows).
      every_n_epochs: cadence.
      log_dir: TensorBoard log directory (None: keep ``history`` only).
      background: feature dict of background rows (e.g. 50 training rows).
      method: a name in `tfrs_diag.explain.METHODS` (default ``"shapley"``).
      groups, baseline, label_key: as in `tfrs_diag.explain.Explainer`.
      output, query_model, candidate_model, space: as in `tfrs_diag.explain.Explainer`:
        the model need not have ``embed``/``score`` methods. A TFRS tutorial model (e.g.
        the basic ranking tutorial's, whose ``compute_loss`` pops the label) is split
        into its lookups and head by calling it on ``background``; retrieval models
        with ``user_model``/``movie_model``-like towers are explained on their
        ``dot(query, candidate)`` score. ``examples`` and ``background`` are copied,
        never modified.
      method_kwargs: extra arguments of the method (e.g. ``{"steps": 64}``).
      run: run sub-directory (default ``"train"``).
      verbose: 1 prints the attribution table after each explanation.

    Example:

    Not run here: these lines need your compiled model and data (tests/test_conformance.py runs the same calls on the TFRS tutorials' models).

    >>> cb = tfrs_diag.callbacks.ExplanationCallback(                                   # doctest: +SKIP
    ...     {k: v[:5] for k, v in data.test.items()}, log_dir="logs/run1",
    ...     background={k: v[:50] for k, v in data.train.items()}, label_key=("user_id", "item_id"))
    >>> model.fit(train_ds, epochs=5, callbacks=[cb])                                  # doctest: +SKIP
    """

    def __init__(self, examples: Mapping[str, Any], every_n_epochs: int = 1, *, log_dir: str | None = None,
                 background: Mapping[str, Any] | None = None, method: str = "shapley", groups=None,
                 baseline: str | None = None, label_key: str | Sequence[str] | None = None,
                 method_kwargs: Mapping[str, Any] | None = None, run: str = "train", verbose: int = 0,
                 output=None, query_model=None, candidate_model=None, space: str = "auto"):
        super().__init__()
        from tfrs_diag.explain import METHODS

        if isinstance(every_n_epochs, bool) or not isinstance(every_n_epochs, int) or every_n_epochs <= 0:
            raise ValueError(f"every_n_epochs must be a positive integer, got {every_n_epochs!r}")
        if method not in METHODS:
            raise ValueError(f"method must be one of {sorted(METHODS)}, got {method!r}")
        if not isinstance(examples, Mapping) or not examples:
            raise ValueError("examples must be a non-empty feature dict {name: array}")
        self.examples = {k: np.asarray(v) for k, v in examples.items()}
        self.every_n_epochs = every_n_epochs
        self.log_dir = S.check_log_dir(log_dir) if log_dir is not None else None
        self.background = {k: np.asarray(v) for k, v in background.items()} if isinstance(background, Mapping) \
            else background
        self.method = method
        split = {k: v for k, v in dict(output=output, query_model=query_model, candidate_model=candidate_model).items()
                 if v is not None}
        if space != "auto":
            split["space"] = space
        self.options = dict(groups=groups, baseline=baseline, label_key=label_key, **split,
                            **dict(method_kwargs or {}))
        self.run = run
        self.verbose = verbose
        self.history: list[tuple[int, Any]] = []
        self._explainer = None

    def _get_explainer(self):
        from tfrs_diag.explain import explainer

        if self._explainer is None:
            # No progress bar inside fit: Keras' own line is the progress there.
            self._explainer = explainer(self.method, self.model, self.background, **{"verbose": 0, **self.options})
        else:
            self._explainer.refresh()  # the tables trained since the last call
        return self._explainer

    def explain_now(self, epoch: int | None = None):
        """Explains the examples with the model as it is now; writes and returns the `Attribution`."""
        from tfrs_diag.explain import write_attribution

        attribution = self._get_explainer().attribute(self.examples)
        step = int(self.model.optimizer.iterations.numpy()) if getattr(self.model, "optimizer", None) else \
            (epoch or 0) + 1
        self.history.append((epoch, attribution))
        if self.log_dir is not None:
            write_attribution(attribution, self.log_dir, step, epoch=epoch, run=self.run)
        if self.verbose:
            print(f"[tfrs_diag] epoch {(epoch or 0) + 1}: {attribution}", flush=True)
        return attribution

    def on_train_begin(self, logs=None):
        check_xla_compatible(self.model, "ExplanationCallback")
        if self.log_dir is not None:
            workers.enter(self.log_dir, self.model.distribute_strategy, self)

    def on_train_end(self, logs=None):
        if self.log_dir is not None:
            workers.leave(self.log_dir, self)

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every_n_epochs == 0:
            self.explain_now(epoch)
