"""TPU readiness without a TPU: what each callback puts inside the train step is XLA-legal.

The model is the integer-index two-tower case (`tutorial_models.index_two_tower`,
``jit_compile=True``; ids looked up in the input pipeline as XLA needs), fed with
``drop_remainder=True`` so the batch dimension is static, as on a TPU. After one short
``fit`` (XLA compiled and ran the step) the test reads the step's XLA-compiled function
(the one carrying ``_XlaMustCompile``, with every nested branch function) and checks:

- GradientStatistics' ops (name scope ``tfrs_diag_capture``, branches included) and
  EmbeddingProbe's scatter: no host call (py_func, print, summary, outfeed), no string op
  or string tensor, and every output shape fully static;
- the whole step holds no string tensor (a TPU could not take it);
- OverfittingMonitor, BeyondAccuracy and ExplanationCallback add no op to the step at
  all (their work runs between steps, on the host or in separate functions);
- the checker itself finds a py_func, a string op and a dynamic shape planted in a graph.

What a TPU would add (TPUStrategy's own compilation, infeed) is not run here; docs/scale.md
says so.
"""

from __future__ import annotations

import collections

import numpy as np
import pytest
import tensorflow as tf

import tutorial_models as T
from tfrs_diag.callbacks import BeyondAccuracy, ExplanationCallback, GradientStatistics, OverfittingMonitor

BATCH = 64
HOST_OPS = {"PyFunc", "PyFuncStateless", "EagerPyFunc", "Print", "PrintV2", "Assert", "OutfeedEnqueue",
            "OutfeedEnqueueTuple", "CreateSummaryFileWriter", "FlushSummaryWriter"}


def _nested(graph, seen=None):
    """``graph`` and every function graph it calls (cond/while branches), once each."""
    seen = {} if seen is None else seen
    seen.setdefault(id(graph), graph)
    for f in getattr(graph, "_functions", {}).values():
        g = getattr(f, "graph", None)
        if g is not None and id(g) not in seen:
            _nested(g, seen)
    return list(seen.values())


def _step_graphs(train_function):
    """The XLA-compiled step of a Keras train function and its nested graphs."""
    fn = train_function
    if not hasattr(fn, "_list_all_concrete_functions"):  # GradientStatistics' guard around it
        fn = next(c.cell_contents for c in fn.__closure__ if hasattr(c.cell_contents, "_list_all_concrete_functions"))
    outer = fn._list_all_concrete_functions()[0].graph
    names = [f.signature.name for f in outer.as_graph_def().library.function if "_XlaMustCompile" in f.attr
             and f.attr["_XlaMustCompile"].b]
    assert len(names) == 1, names
    return _nested(outer._functions[names[0]].graph)


def _ours(graphs):
    """GradientStatistics' ops (its name scope and branch functions) and EmbeddingProbe's scatters."""
    out = []
    for g in graphs:
        in_branch = g.name.startswith("tfrs_diag_capture")
        out += [op for op in g.get_operations()
                if in_branch or op.name.startswith("tfrs_diag_capture") or "_probe/" in op.name]
    return out


def _violations(ops) -> list[str]:
    bad = []
    for op in ops:
        if op.type in HOST_OPS or "String" in op.type or "Summary" in op.type:
            bad.append(f"host or string op {op.type} ({op.name})")
        for t in op.outputs:
            if t.dtype == tf.string:
                bad.append(f"string tensor from {op.name}")
            elif not t.shape.is_fully_defined():
                bad.append(f"dynamic shape {t.shape} from {op.name} ({op.type})")
    return bad


def _fit(callbacks, probed=False):
    data = T.movielens_like(num_ratings=600)
    case = T.cases(data)["xla_two_tower"]
    tf.keras.utils.set_random_seed(0)
    if probed:
        with T.probed():
            model = case.build()
    else:
        model = case.build()
    grabbed = {}

    class Grab(tf.keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            grabbed["fn"] = self.model.train_function

    history = model.fit(case.train.batch(BATCH, drop_remainder=True), epochs=1, steps_per_epoch=3, verbose=0,
                        callbacks=[*callbacks(case), Grab()])
    assert np.isfinite(history.history["loss"][-1])  # XLA compiled and ran the step
    return _step_graphs(grabbed["fn"])


def _op_types(graphs):
    return collections.Counter(op.type for g in graphs for op in g.get_operations())


@pytest.fixture(scope="module")
def plain_step():
    return _op_types(_fit(lambda case: []))


@pytest.mark.slow
def test_gradient_statistics_step_is_xla_legal_and_static(tmp_path):
    graphs = _fit(lambda case: [GradientStatistics(str(tmp_path), every_n_steps=1, histogram_every_n_steps=1,
                                                   verbose=0)])
    ours = _ours(graphs)
    assert len(ours) > 100 and {"If", "StatelessIf"} & {op.type for op in ours}  # the capture and its branches
    assert _violations(ours) == []
    assert not [op.name for g in graphs for op in g.get_operations() for t in op.outputs if t.dtype == tf.string]


@pytest.mark.slow
def test_monitor_adds_only_the_probe_scatters_and_epoch_callbacks_add_nothing(tmp_path, plain_step):
    def callbacks(case):
        examples = {k: v.numpy() for k, v in next(iter(case.validation.batch(32))).items()}
        return [OverfittingMonitor(str(tmp_path), probe_data=examples, train_probe_data=examples, probe_size=32,
                                   verbose=0),
                BeyondAccuracy(str(tmp_path), case.validation, case.candidates, k=(5,), query_key=case.query_key,
                               item_key=case.item_key, query_features=case.query_features, verbose=0),
                ExplanationCallback({k: v[:4] for k, v in case.test_features.items()}, every_n_epochs=1000)]

    probed = _fit(callbacks, probed=True)
    scatters = [op for g in probed for op in g.get_operations()
                if op.type == "ResourceScatterAdd" and "_probe/" in op.name]  # (Adagrad scatters too)
    assert len(scatters) == 2  # one per table
    assert _violations(scatters + [t.op for op in scatters for t in op.inputs]) == []
    added = _op_types(probed) - plain_step
    # Per table: the scatter, its constant 1 and the captured handle of the counts variable.
    assert added == collections.Counter({"ResourceScatterAdd": 2, "Const": 2, "Placeholder": 2})
    assert _op_types(_fit(lambda case: [
        BeyondAccuracy(str(tmp_path / "b"), case.validation, case.candidates, k=(5,), query_key=case.query_key,
                       item_key=case.item_key, query_features=case.query_features, verbose=0)])) == plain_step


def test_the_checker_finds_host_calls_string_ops_and_dynamic_shapes():
    @tf.function
    def bad(x):
        with tf.name_scope("tfrs_diag_capture"):
            y = tf.py_function(lambda v: v * 2, [x], tf.float32)
            s = tf.strings.as_string(x)
            u, _ = tf.unique(tf.cast(x, tf.int32))
        return y, s, u

    graph = bad.get_concrete_function(tf.TensorSpec([8], tf.float32)).graph
    found = "\n".join(_violations(_ours(_nested(graph))))
    assert "EagerPyFunc" in found and "AsString" in found and "string tensor" in found
    assert "dynamic shape (None,)" in found and "Unique" in found

