"""What every explainer shares: the adapter, the baseline rows and batched coalition values.

A coalition is a 0/1 mask over feature groups. Its value for an example is the model
output with the groups in the coalition taken from the example and the others from a
baseline row, averaged over the baseline rows (one row for "oov"/"mean"/"frequency",
the background rows for "background"):

    v(S) = mean_b head(mask_S * e(x) + (1 - mask_S) * b)

All coalitions of a chunk of examples and background rows go through one traced call.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from tfrs_diag._keras import tf
from tfrs_diag.explain.adapters import BASELINES, as_adapter
from tfrs_diag.explain.embedding_space import EmbeddingSpace

#: Default bound on the rows (examples x coalitions x baseline rows) of one call.
MAX_BATCH_ROWS = 1 << 16


def _example_labels(examples: Mapping[str, Any], n: int, label_key: str | Sequence[str] | None,
                    labels: Sequence[str] | None) -> list[str] | None:
    if labels is not None:
        labels = [str(x) for x in labels]
        if len(labels) != n:
            raise ValueError(f"labels has {len(labels)} entries for {n} examples")
        return labels
    if label_key is None:
        return None
    keys = [label_key] if isinstance(label_key, str) else list(label_key)

    def text(v):
        return v.decode() if isinstance(v, bytes) else str(v)

    unknown = [k for k in keys if k not in examples]
    if unknown:
        raise KeyError(f"label_key: {unknown} not among the examples' features {sorted(examples)}; "
                       "name features the examples carry, or pass label_key=None")
    cols = [np.asarray(examples[k]).reshape(-1) for k in keys]
    return [" ".join(text(c[i]) for c in cols) for i in range(n)]


class Progress:
    """Keras' `Progbar` over chunks of work, or nothing: shown only when asked and worth it (2+ chunks)."""

    def __init__(self, total: int, unit: str, show: bool):
        self.done = 0
        self._bar = tf.keras.utils.Progbar(total, unit_name=unit) if show and total >= 2 else None

    def advance(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(self.done)


class Explainer:
    """Base of the attribution methods: ``Method(model, background, ...).attribute(examples)``.

    Args:
      model: a `FeatureAdapter` or a model `as_adapter` can split (e.g.
        `tfrs_diag.models.RankingModel`, `tfrs_diag.models.TwoTowerModel`).
      background: feature dict of reference rows (needed for ``baseline="background"``
        and ``"frequency"``).
      baseline: where absent groups come from, in embedding space: ``"background"``
        (average over the background rows), ``"frequency"`` (their mean embedding),
        ``"mean"`` (each table's mean row) or ``"oov"`` (each table's OOV row).
      groups: feature groups (default: one per input key; see `resolve_groups`).
      label_key: feature(s) whose values label the examples in tables (default: none).
      max_batch_rows: bound on rows per traced call (memory stays bounded for large
        backgrounds: rows are chunked and their sums accumulated).
      output: for a model whose output is not one score per row: an index or key into
        a tuple/dict output, or a callable mapping it to ``[n]`` (e.g.
        ``lambda y: y[:, 0, 0]`` for a listwise model's first item).
      query_model, candidate_model: explain the retrieval score
        ``dot(query_model(x), candidate_model(x))`` of (query, item) rows; layers,
        callables or attribute names. Found by name (``user_model``/``movie_model``,
        ``query_model``/``candidate_model``, ``_query_model``/``_candidate_model``, ...)
        when the model has no ``call`` of its own.
      query_features, candidate_features: the feature name (or list of names, for a
        tower taking a dict) each tower takes; default: found by watching the model's
        ``compute_loss`` call the towers on the background rows.
      space: ``"auto"`` (default): models without ``embed``/``score`` methods are split
        into their embedders by calling them on the background rows
        (`tfrs_diag.explain.discovery`), or, when no split holds, explained in input
        space (raw feature values swapped with background rows, the whole model called
        per coalition; a warning says why). ``"embedding"``: raise instead of falling
        back. ``"input"``: always swap raw values.
      verbose: 1 shows a progress bar while `attribute` works through several chunks of
        examples (or, for permutation importance, of shuffles); 0 is silent.

    The user's feature dicts are never modified (the models are called on copies).
    """

    method = "explainer"
    #: Argument kinds of each traced ``_graph_<name>``: rows [N, D], masks [C, groups], matrix, vector.
    _signatures = {"head": ("rows",), "coalitions": ("rows", "masks", "rows"),
                   "pairs": ("rows", "rows", "matrix", "matrix", "matrix"), "ig": ("rows", "rows", "vector", "vector")}

    def __init__(self, model, background: Mapping[str, Any] | None = None, *, baseline: str | None = None,
                 groups=None, label_key: str | Sequence[str] | None = None, max_batch_rows: int = MAX_BATCH_ROWS,
                 output=None, query_model=None, candidate_model=None, query_features=None, candidate_features=None,
                 space: str = "auto", verbose: int = 1):
        if baseline is None:
            baseline = "background" if background is not None else "mean"
        if baseline not in BASELINES:
            raise ValueError(f"baseline must be one of {BASELINES}, got {baseline!r}")
        if baseline in ("background", "frequency") and background is None:
            raise ValueError(f"baseline={baseline!r} needs background rows: pass background=<feature dict>, "
                             "or use baseline='mean' or 'oov'")
        if not isinstance(max_batch_rows, int) or max_batch_rows < 1:
            raise ValueError(f"max_batch_rows must be a positive integer, got {max_batch_rows!r}")
        self.adapter = as_adapter(model, background, output=output, query_model=query_model,
                                  candidate_model=candidate_model, query_features=query_features,
                                  candidate_features=candidate_features, space=space)
        if getattr(self.adapter, "space", "embedding") == "input" and baseline != "background":
            raise ValueError(f"baseline={baseline!r} needs embeddings, but {self.describe_model()}; swapping raw "
                             "values needs baseline='background' (the default with background rows)")
        self.space = EmbeddingSpace(self.adapter, groups)
        self.baseline = baseline
        self.label_key = label_key
        self.max_batch_rows = max_batch_rows
        self.verbose = verbose
        self._background = background
        self._baseline_rows: np.ndarray | None = None
        # Validates the background early and fixes the layout; handed to the first baseline_rows().
        self._background_rows = self.space.embed(background, argument="background") if background is not None else None
        self._fns: dict[str, Any] = {}

    def describe_model(self) -> str:
        """How the model is explained: its embedders, or why it is explained in input space."""
        describe = getattr(self.adapter, "describe", None)
        if describe is not None:
            return describe()
        if getattr(self.adapter, "space", "embedding") == "input":
            reason = getattr(self.adapter, "reason", None)
            return f"the model is explained in input space{f' ({reason})' if reason else ''}"
        return f"{type(self.adapter).__name__} over {list(self.adapter.feature_names)}"

    @property
    def feature_space(self) -> str:
        """``"embedding"`` (lookups split from the head) or ``"input"`` (raw values swapped, whole model called)."""
        return getattr(self.adapter, "space", "embedding")

    def _finish(self, attribution):
        """Adds where the coalitions were formed (``extras["space"]``) to an attribution."""
        attribution.extras.setdefault("space", self.feature_space)
        return attribution

    @property
    def group_names(self) -> tuple[str, ...]:
        return self.space.group_names

    @property
    def num_groups(self) -> int:
        return self.space.num_groups

    def baseline_rows(self) -> np.ndarray:
        """``[m, D]`` baseline rows (embedded once, then reused; call `refresh` after training)."""
        if self._baseline_rows is None:
            rows = self.space.baseline_rows(self.baseline, self._background, self._background_rows)
            self._baseline_rows, self._background_rows = rows.astype(np.float32), None
        return self._baseline_rows

    def refresh(self) -> None:
        """Forgets cached baseline embeddings (the model's tables changed)."""
        self._baseline_rows = self._background_rows = None

    def _prepare(self, examples, labels=None) -> tuple[np.ndarray, np.ndarray, list[str] | None]:
        """Embeds ``examples`` -> (rows [n, D], outputs [n], labels)."""
        rows = self.space.embed(examples, argument="examples")
        outputs = self.outputs(rows)
        n = rows.shape[0]
        return rows, outputs, _example_labels(examples, n, self.label_key, labels)

    def outputs(self, rows: np.ndarray) -> np.ndarray:
        """The model's score of each ``[n, D]`` embedding row, float64 ``[n]``, in chunks of ``max_batch_rows``."""
        out = []
        step = max(1, self.max_batch_rows)
        for lo in range(0, rows.shape[0], step):
            out.append(self._fn("head")(tf.constant(rows[lo:lo + step])).numpy())
        return np.concatenate(out).astype(np.float64)

    # ------------------------------------------------------------ traced functions

    def _fn(self, name: str):
        """The traced ``_graph_<name>``; every argument is a float32 tensor of any shape
        (one trace per explainer, whatever the chunk sizes)."""
        fn = self._fns.get(name)
        if fn is None:
            shapes = {"rows": [None, self.space.dim], "masks": [None, self.num_groups],
                      "matrix": [None, None], "vector": [None]}
            signature = [tf.TensorSpec(shapes[a], tf.float32) for a in self._signatures[name]]
            graph = getattr(self, f"_graph_{name}")

            def call(*args):  # a fresh function per explainer: TF's retracing warning counts per function
                return graph(*args)

            fn = self._fns[name] = tf.function(call, input_signature=signature)
        return fn

    def _graph_head(self, rows):
        return self.space.head(rows)

    def _linear_parts(self, ex, bg):
        """Per-group products of the head's first Dense layer: ([.., G+1, H] of ex, of bg, the layer)."""
        linear = self.space.linear_head()
        if linear is None:
            return None
        kernel, bias, activation, rest = linear
        kernel = tf.cast(kernel, tf.float32)
        per_group = tf.one_hot(tf.constant(self.space.col_group), self.num_groups + 1,
                               dtype=tf.float32)[:, :, None] * kernel[:, None, :]
        return tf.einsum("nd,dgh->ngh", ex, per_group), tf.einsum("bd,dgh->bgh", bg, per_group), \
            tf.cast(bias, tf.float32), activation, rest

    @staticmethod
    def _after_first_layer(z, activation, rest):
        a = tf.reshape(z, [-1, tf.shape(z)[-1]])
        if activation is not None:
            a = activation(a)
        return tf.cast(tf.reshape(rest(a), [-1]), tf.float32)

    def _graph_coalitions(self, ex, masks, bg):
        """Sum over ``bg`` rows of head(mix) for every (example, coalition): ``[ne, C]``."""
        masks = tf.concat([masks, tf.ones([tf.shape(masks)[0], 1], masks.dtype)], axis=1)  # ungrouped: from x
        ne, c, mb = tf.shape(ex)[0], tf.shape(masks)[0], tf.shape(bg)[0]
        parts = self._linear_parts(ex, bg)
        if parts is not None:
            # Dense over the concatenation is linear: per-group products once per example and
            # per background row, then coalitions are sums of them (no [C*mb, D] matmul).
            px, pb, bias, activation, rest = parts
            z = (tf.einsum("cg,ngh->nch", masks, px)[:, :, None, :]
                 + tf.einsum("cg,bgh->cbh", 1.0 - masks, pb)[None] + bias)
            y = tf.reshape(self._after_first_layer(z, activation, rest), [ne, c, mb])
        else:
            colmask = tf.gather(masks, tf.constant(self.space.col_group), axis=1)  # [C, D]
            mixed = colmask[None, :, None, :] * ex[:, None, None, :] + (1.0 - colmask)[None, :, None, :] * bg[None, None]
            y = tf.reshape(self.space.head(tf.reshape(mixed, [-1, tf.shape(ex)[1]])), [ne, c, mb])
        return tf.reduce_sum(y, axis=2)

    def _graph_pairs(self, ex, bg, players, reduced, weights):
        """Shapley values of the games of paired rows ``ex[q]``/``bg[q]`` over their ``players [q, k]``.

        Coalition c of pair q takes ``players[q, j]`` from the example where ``reduced[c, j]``
        is 1 and from the baseline row otherwise; every other group from the example.
        Returns ``[q, C] outputs @ weights [C, k]``: ``[q, k]``.
        """
        players = tf.cast(players, tf.int32)
        q, c = tf.shape(players)[0], tf.shape(reduced)[0]
        absent = 1.0 - reduced  # [C, k]: 1 where the player comes from the baseline row
        parts = self._linear_parts(ex, bg)
        if parts is not None:
            # First-layer input of a coalition = all-from-example minus the absent players' (x - b) products.
            px, pb, bias, activation, rest = parts
            swap = tf.gather(px - pb, players, batch_dims=1)  # [q, k, H]
            z = (tf.reduce_sum(px, axis=1) + bias)[:, None, :] - tf.einsum("cj,qjh->qch", absent, swap)
            y = tf.reshape(self._after_first_layer(z, activation, rest), [q, c])
        else:
            onehot = tf.one_hot(players, self.num_groups + 1, dtype=tf.float32)  # [q, k, G+1]
            masks = 1.0 - tf.einsum("cj,qjg->qcg", absent, onehot)
            colmask = tf.gather(masks, tf.constant(self.space.col_group), axis=2)  # [q, C, D]
            mixed = colmask * ex[:, None, :] + (1.0 - colmask) * bg[:, None, :]
            y = tf.reshape(self.space.head(tf.reshape(mixed, [-1, tf.shape(ex)[1]])), [q, c])
        return tf.matmul(y, weights)

    def pair_shapley(self, ex: np.ndarray, bg: np.ndarray, players: np.ndarray, reduced: np.ndarray,
                     weights: np.ndarray) -> np.ndarray:
        """``[q, k]`` Shapley values of paired games (see `_graph_pairs`), chunked by ``max_batch_rows``."""
        step = max(1, self.max_batch_rows // max(reduced.shape[0], 1))
        fn = self._fn("pairs")
        r, w = tf.constant(reduced, tf.float32), tf.constant(weights, tf.float32)
        out = [fn(tf.constant(ex[i:i + step]), tf.constant(bg[i:i + step]),
                  tf.constant(players[i:i + step], tf.float32), r, w).numpy() for i in range(0, len(players), step)]
        return np.concatenate(out).astype(np.float64)

    def base_values(self, rows: np.ndarray) -> np.ndarray:
        """``[n]`` value of the empty coalition: the mean output over the baseline rows."""
        return self.coalition_values(rows, np.zeros((1, self.num_groups), np.float32))[:, 0]

    def progress(self, total: int, unit: str = "example chunk") -> Progress:
        """A progress bar over ``total`` chunks of work, shown when `verbose` and there are 2 or more."""
        return Progress(total, unit, bool(getattr(self, "verbose", 0)))

    def coalition_values(self, rows: np.ndarray, masks: np.ndarray, *, progress: bool = False) -> np.ndarray:
        """``[n, C]`` coalition values v(S) of examples ``rows`` for 0/1 ``masks`` ``[C, groups]``.

        ``progress``: show a bar over the chunks of examples (for the call that does the work).
        """
        masks = np.asarray(masks, dtype=np.float32)
        bg = self.baseline_rows()
        n, c, m = rows.shape[0], masks.shape[0], bg.shape[0]
        cap = self.max_batch_rows
        cc = min(c, cap)
        mb = min(m, max(1, cap // cc))
        ne = min(n, max(1, cap // (cc * mb)))
        fn = self._fn("coalitions")
        out = np.zeros((n, c), dtype=np.float64)
        bar = self.progress(-(-n // ne)) if progress else None
        for i in range(0, n, ne):
            ex = tf.constant(rows[i:i + ne])
            for j in range(0, c, cc):
                mk = tf.constant(masks[j:j + cc])
                for k in range(0, m, mb):
                    out[i:i + ne, j:j + cc] += fn(ex, mk, tf.constant(bg[k:k + mb])).numpy()
            if bar is not None:
                bar.advance()
        return out / m

    def attribute(self, examples: Mapping[str, Any], labels: Sequence[str] | None = None):
        """Attributions of ``examples`` (a feature dict) -> `tfrs_diag.explain.Attribution`."""
        raise NotImplementedError
