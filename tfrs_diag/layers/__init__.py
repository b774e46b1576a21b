"""Keras layers that plug into TFRS towers."""

from tfrs_diag.layers.embedding_probe import EmbeddingProbe

__all__ = ["EmbeddingProbe"]
