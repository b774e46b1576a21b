"""Graph-building helpers shared by the in-graph diagnostics."""

from __future__ import annotations

from tfrs_diag._keras import tf


def rare_cond(pred, true_fn, false_fn, lower: bool = False):
    """`tf.cond` for a branch that is rarely taken.

    TensorFlow lowers a cond to Switch/Merge nodes so that its branches run inline;
    the untaken branch then still costs the executor a visit per node on every step.
    Keeping the functional ``If`` (``lower=False``) costs one kernel that runs only the
    taken branch. XLA compiles the cond either way.
    """
    graph = tf.compat.v1.get_default_graph()
    before = len(graph.get_operations())
    out = tf.cond(pred, true_fn, false_fn)
    if not lower:
        from tensorflow.core.framework import attr_value_pb2  # noqa: PLC0415

        for op in graph.get_operations()[before:]:
            if op.type in ("If", "StatelessIf"):
                op._set_attr("_lower_using_switch_merge", attr_value_pb2.AttrValue(b=False))
    return out
