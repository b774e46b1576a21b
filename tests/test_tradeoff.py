"""The re-ranked evaluation and the trade-off sweep, on the TFRS README quickstart model."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_recommenders as tfrs

import tfrs_diag
import tutorial_models as tm
from tfrs_diag import summary
from tfrs_diag.callbacks import BeyondAccuracy
from tfrs_diag.layers import MMR, EpsilonGreedy, ReRankedTopK
from tfrs_diag.views.report import report_lines

ROUTE = "/data/plugin/tfrs_diag/"
pytestmark = pytest.mark.slow  # the module's fixture trains the quickstart model (about 3 s), each sweep a few passes


@pytest.fixture(scope="module")
def setup():
    tf.keras.utils.set_random_seed(0)
    data = tm.movielens_like(num_users=40, num_movies=60, num_ratings=1500)
    train, test = data.split()
    model = tm.quickstart(data)
    model.fit(tf.data.Dataset.from_tensor_slices({"user_id": train["user_id"], "movie_title": train["movie_title"]})
              .batch(256), epochs=2, verbose=0)
    counts = {t: 0 for t in data.movies}
    for t in train["movie_title"]:
        counts[t] += 1
    popularity = np.array([counts[t] for t in data.movies], float)
    kwargs = dict(query_key="user_id", item_key="movie_title", item_popularity=popularity / popularity.sum(),
                  verbose=0)
    return model, data, test, kwargs


def _ndcg(lists, test, k):
    relevant: dict = {}
    for u, t in zip(test["user_id"].tolist(), test["movie_title"].tolist()):
        relevant.setdefault(u, set()).add(t)
    values = []
    for u, row in lists.items():
        dcg = sum(1 / np.log2(r + 2) for r, t in enumerate(row[:k]) if t in relevant[u])
        ideal = sum(1 / np.log2(r + 2) for r in range(min(k, len(relevant[u]))))
        values.append(dcg / ideal)
    return float(np.mean(values))


def test_reranked_evaluation_scores_the_lists_a_reranked_index_serves(setup):
    model, data, test, kwargs = setup
    result = tfrs_diag.evaluate(model, data.movies, test, k=5, reranker=MMR(0.4), rerank_pool=20, **kwargs)
    # An independent path: TFRS's BruteForce under ReRankedTopK, NDCG in numpy.
    index = ReRankedTopK(tfrs.layers.factorized_top_k.BruteForce(model.user_model), MMR(0.4), k=5, pool=20)
    index.index(model.movie_model(tf.constant(data.movies)), tf.constant(data.movies))
    users = np.unique(test["user_id"])
    _, ids = index(tf.constant(users))
    lists = {u: [t.decode() for t in row] for u, row in zip(users.tolist(), ids.numpy().tolist())}
    assert result["ndcg_at_5"] == pytest.approx(_ndcg(lists, test, 5), abs=1e-5)
    bare = tfrs_diag.evaluate(model, data.movies, test, k=5, **kwargs)
    assert result["ild_at_5"] > bare["ild_at_5"]


def test_sweep_rows_trace_the_trade_off(setup):
    model, data, test, kwargs = setup
    bare = tfrs_diag.evaluate(model, data.movies, test, k=5, **kwargs)
    mmr = MMR(0.5)
    result = tfrs_diag.evaluate(model, data.movies, test, k=5, reranker=mmr, rerank_pool=30,
                                sweep=[0.0, 0.5, 1.0], **kwargs)
    rows = result.trade_off
    assert [r["value"] for r in rows] == [0.0, 0.5, 1.0] and {r["knob"] for r in rows} == {"lambda"}
    assert mmr.knob_value == 0.5  # restored
    # lambda = 1 is the plain top-K: every metric equals the bare pass's.
    for name in ("ndcg_at_5", "recall_at_5", "coverage_at_5", "ild_at_5", "novelty_at_5", "gini_at_5"):
        assert rows[-1][name] == pytest.approx(bare[name], abs=1e-6)
    assert rows[0]["ild_at_5"] > rows[-1]["ild_at_5"]
    assert "trade-off of lambda" in str(result)

    eps = tfrs_diag.evaluate(model, data.movies, test, k=5, reranker=EpsilonGreedy(seed=0), rerank_pool=60,
                             sweep=[0.0, 0.3, 0.7], **kwargs).trade_off
    assert eps[0]["aplt_at_5"] == pytest.approx(bare["aplt_at_5"], abs=1e-6)
    assert eps[0]["aplt_at_5"] < eps[1]["aplt_at_5"] < eps[2]["aplt_at_5"]


def test_bad_sweeps_fail_before_evaluating(setup):
    model, data, test, kwargs = setup
    with pytest.raises(ValueError, match="sweep: needs reranker="):
        tfrs_diag.evaluate(model, data.movies, test, k=5, sweep=[0.5], **kwargs)
    with pytest.raises(ValueError, match="lambda_ must lie in"):
        tfrs_diag.evaluate(model, data.movies, test, k=5, reranker=MMR(), sweep=[2.0], **kwargs)
    with pytest.raises(ValueError, match="pass item_popularity"):
        tfrs_diag.evaluate(model, data.movies, test, k=5, reranker=EpsilonGreedy(), query_key="user_id",
                           item_key="movie_title", verbose=0)


def test_beyond_accuracy_writes_the_sweep_each_evaluation_and_the_report_prints_it(setup, tmp_path):
    model, data, test, kwargs = setup
    kwargs = {k: v for k, v in kwargs.items() if k != "verbose"}
    cb = BeyondAccuracy(str(tmp_path), test, data.movies, k=5, reranker=MMR(0.7), rerank_pool=20,
                        sweep=[0.3, 1.0], verbose=0, **kwargs)
    train = tf.data.Dataset.from_tensor_slices({"user_id": data.ratings["user_id"],
                                                "movie_title": data.ratings["movie_title"]}).batch(512)
    model.fit(train, epochs=2, verbose=0, callbacks=[cb])
    records = summary.read_run(str(tmp_path / "validation")).records["tfrs_diag/div/pareto"]
    assert len(records) == 2
    last = records[-1][1]
    assert last["type"] == "pareto" and last["reranker"] == "MMR"
    assert [r["value"] for r in last["rows"]] == [0.3, 1.0]
    assert last["rows"] == cb.history_trade_off[-1][1]
    text = "\n".join(report_lines(str(tmp_path))[0])
    assert "Re-ranker trade-off, MMR" in text and "epoch 1" in text and "epoch 2" in text
    # The plugin serves the records to its page (shown as JSON until the page has a chart).
    from werkzeug.test import Client

    from tfrs_diag.views.tensorboard import plugin

    app = plugin.make_wsgi_app(str(tmp_path), load_fast=False)
    try:
        body = Client(app).get(ROUTE + "overview", query_string={"run": "validation"}).json
    finally:
        app.close()
    assert [r["payload"]["rows"] for r in body["records"]["pareto"]] == [rows for _, rows in cb.history_trade_off]
