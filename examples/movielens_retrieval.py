"""Two-tower retrieval (the TFRS tutorial model) with tfrs_diag's gradient diagnostics.

Run from the repository root (synthetic data by default, about 20 s on 2 CPU cores):

    TF_USE_LEGACY_KERAS=1 python examples/movielens_retrieval.py
    TF_USE_LEGACY_KERAS=1 python examples/movielens_retrieval.py --data-dir path/to/ml-100k
    tensorboard --logdir logs/retrieval

MovieLens-100k is not shipped (its licence forbids redistribution): download ml-100k from
https://grouplens.org/datasets/movielens/100k/, unzip it and pass its directory.

What the diagnostics add to an ordinary TFRS training script is one callback:

    from tfrs_diag.callbacks import GradientStatistics

    gradients = GradientStatistics("logs/retrieval", every_n_steps=100)
    model.fit(train_ds, epochs=3, callbacks=[gradients])
    print(gradients.alerts)          # exploding / vanishing / non-finite gradients, if any

`tfrs_diag.recipes.train_retrieval` does exactly that for `tfrs_diag.models.TwoTowerModel`
(the same routine `tfrs-diag demo` runs). After training, this script reports the top-100
hit rate on the test split (the share of held-out interactions whose item is among the
user's 100 highest-scoring items) next to what a random recommender would get.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # TFRS needs Keras 2: set before TensorFlow loads

from tfrs_diag.recipes import TOP_K, example_setup, retrieval_hit_rate, train_retrieval  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    """Trains, evaluates and prints; returns the metrics as a dict."""
    args, data = example_setup(argv, __doc__.splitlines()[0], logdir="logs/retrieval", embedding_dim=32)

    result = train_retrieval(data, args.logdir, epochs=args.epochs, batch_size=args.batch_size,
                             embedding_dim=args.embedding_dim, seed=args.seed, every_n_steps=args.every_n_steps)
    k = min(TOP_K, data.num_items)
    metrics = {
        f"hit_rate@{k}": retrieval_hit_rate(result.model, data, k=k),
        f"random_hit_rate@{k}": k / data.num_items,
        "final_loss": result.final_loss,
        "alerts": [str(a) for a in result.gradients.alerts],
    }

    print(f"\ntop-{k} hit rate on test: {metrics[f'hit_rate@{k}']:.3f} "
          f"(random recommender: {metrics[f'random_hit_rate@{k}']:.3f})")
    print(f"gradient alerts: {len(metrics['alerts'])}")
    for alert in metrics["alerts"]:
        print(f"  {alert}")
    print(f"\nSee the gradient statistics with:\n  tensorboard --logdir {os.path.abspath(args.logdir)}")
    return metrics


if __name__ == "__main__":
    main()
