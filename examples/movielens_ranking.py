"""Rating prediction over several feature groups with tfrs_diag's gradient diagnostics.

Run from the repository root (synthetic data by default, about 20 s on 2 CPU cores):

    TF_USE_LEGACY_KERAS=1 python examples/movielens_ranking.py
    TF_USE_LEGACY_KERAS=1 python examples/movielens_ranking.py --data-dir path/to/ml-100k
    tensorboard --logdir logs/ranking

MovieLens-100k is not shipped (its licence forbids redistribution): download ml-100k from
https://grouplens.org/datasets/movielens/100k/, unzip it and pass its directory.

The model (`tfrs_diag.models.RankingModel`) embeds five feature groups, ``user_id``,
``item_id``, ``user_gender`` (via `StringLookup`), ``user_age_bucket`` and
``item_category`` (via `IntegerLookup`), concatenates them and scores with an MLP; the
synthetic and MovieLens data sets both carry these features. The diagnostics are one
callback on `fit`, as in any Keras script:

    from tfrs_diag.callbacks import GradientStatistics

    gradients = GradientStatistics("logs/ranking", every_n_steps=100)
    model.fit(train_ds, epochs=3, callbacks=[gradients])
    print(gradients.alerts)          # exploding / vanishing / non-finite gradients, if any

In TensorBoard, ``tfrs_diag/grad/layer_norm/*`` compares the five embedding tables with
the MLP layers. This script reports the test RMSE next to that of always predicting the
mean training rating.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # TFRS needs Keras 2: set before TensorFlow loads

import numpy as np  # noqa: E402

from tfrs_diag.recipes import example_setup, ranking_rmse, train_ranking  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    """Trains, evaluates and prints; returns the metrics as a dict."""
    args, data = example_setup(argv, __doc__.splitlines()[0], logdir="logs/ranking", embedding_dim=16)

    result = train_ranking(data, args.logdir, epochs=args.epochs, batch_size=args.batch_size,
                           embedding_dim=args.embedding_dim, seed=args.seed, every_n_steps=args.every_n_steps)
    baseline = float(np.sqrt(np.mean((data.test["rating"] - data.train["rating"].mean()) ** 2)))
    metrics = {
        "test_rmse": ranking_rmse(result.model, data.test),
        "mean_rating_rmse": baseline,
        "final_loss": result.final_loss,
        "alerts": [str(a) for a in result.gradients.alerts],
    }

    print(f"\ntest RMSE: {metrics['test_rmse']:.3f} (always predicting the mean rating: {baseline:.3f})")
    print(f"gradient alerts: {len(metrics['alerts'])}")
    for alert in metrics["alerts"]:
        print(f"  {alert}")
    print(f"\nSee the gradient statistics with:\n  tensorboard --logdir {os.path.abspath(args.logdir)}")
    return metrics


if __name__ == "__main__":
    main()
