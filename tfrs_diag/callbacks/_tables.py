"""Reads the health of every `EmbeddingProbe` table of a model (for `OverfittingMonitor`).

One traced call per table (row norms of the whole table, the spectrum of a seeded
sample of used rows); the numbers come from `tfrs_diag.stats.embeddings.table_health`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tfrs_diag import summary as S
from tfrs_diag._keras import tf
from tfrs_diag.layers.embedding_probe import EmbeddingProbe
from tfrs_diag.stats import embeddings as E


class TableReader:
    def __init__(self, sample_rows: int = 20000, num_buckets: int = 4, seed: int = 0):
        self.sample_rows, self.num_buckets, self.seed = sample_rows, num_buckets, seed
        self.probes: list[EmbeddingProbe] = []
        self._fns: dict[int, Any] = {}

    def attach(self, model) -> None:
        self.probes = [m for m in model.submodules if isinstance(m, EmbeddingProbe)]

    def read(self, epoch: int, step: int) -> list[dict[str, Any]]:
        """One stats dict per built table: ``table``, ``dim``, ``epoch``, ``step``, ``sampled_rows`` and
        the keys of `tfrs_diag.stats.embeddings.table_health`."""
        out = []
        for probe in self.probes:
            if not probe.built:
                continue
            table = probe.embeddings
            fn = self._fns.get(id(probe))
            if fn is None:
                fn = self._fns[id(probe)] = tf.function(
                    lambda rows, t=table: E.table_statistics(t, rows),
                    input_signature=[tf.TensorSpec([None], tf.int64)])
            counts = probe.usage_counts.numpy()
            rows = E.sample_rows(len(counts), self.sample_rows, candidates=np.flatnonzero(counts > 0),
                                 seed=self.seed + epoch)
            norms, sigma, finite = (x.numpy() for x in fn(tf.constant(rows, tf.int64)))
            stats = {"table": S.clean_name(table.name), "dim": probe.output_dim, "epoch": epoch, "step": step,
                     **E.table_health(norms, sigma, bool(finite) and len(rows) > 0, counts, probe.output_dim, self.num_buckets),
                     "sampled_rows": int(len(rows))}
            out.append(stats)
        return out
