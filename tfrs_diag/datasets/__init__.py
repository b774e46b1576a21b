"""Recommendation data sets as plain numpy feature dicts, ready for `tf.data`.

Only numpy is imported here, so loading a data set does not pull in TensorFlow.

>>> from tfrs_diag.datasets import synthetic
>>> ds = synthetic(num_users=30, num_items=40, num_interactions=300)
>>> print(ds.describe().splitlines()[0])
synthetic(seed=0): 30 users, 40 items, 300 interactions (242 train / 58 test)
"""

from tfrs_diag.datasets._types import RecDataset, head_tail_split
from tfrs_diag.datasets.feedback import synthetic_feedback
from tfrs_diag.datasets.movielens import movielens_100k
from tfrs_diag.datasets.synthetic import synthetic

__all__ = ["RecDataset", "head_tail_split", "movielens_100k", "synthetic", "synthetic_feedback"]
