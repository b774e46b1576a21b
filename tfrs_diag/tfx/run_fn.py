"""Inside a TFX Trainer's ``run_fn``: our callbacks under the model-run folder, and the towers saved."""

from __future__ import annotations

import os
from typing import Any, Mapping

from tfrs_diag._keras import tf

#: The `fn_args.custom_config` key that holds our settings.
CONFIG_KEY = "tfrs_diag"
#: Folders of the serving model that hold the saved towers (what `RecommenderEvaluator` loads).
QUERY_TOWER_DIR, CANDIDATE_TOWER_DIR = "query_tower", "candidate_tower"

_SECTIONS = ("tensorboard", "gradients", "overfitting", "beyond_accuracy")


def _config(fn_args) -> dict[str, Any]:
    custom = getattr(fn_args, "custom_config", None) or {}
    config = custom.get(CONFIG_KEY, {}) if isinstance(custom, Mapping) else {}
    if not isinstance(config, Mapping):
        raise ValueError(f"custom_config[{CONFIG_KEY!r}] must be a dict of sections {_SECTIONS} (each a dict of "
                         f"the callback's arguments, or false to leave it out), got {config!r}")
    unknown = sorted(set(config) - set(_SECTIONS))
    if unknown:
        raise ValueError(f"custom_config[{CONFIG_KEY!r}] has unknown sections {unknown}; known: {list(_SECTIONS)}")
    return dict(config)


def _section(config, name, default_on: bool) -> dict | None:
    value = config.get(name, {} if default_on else None)
    if value is False or value is None:
        return None
    if value is True:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"custom_config[{CONFIG_KEY!r}][{name!r}] must be a dict of arguments, true or false; "
                         f"got {value!r}")
    return dict(value)


def diagnostic_callbacks(fn_args, *, validation_data=None, eval_data=None,
                         candidates=None) -> list[tf.keras.callbacks.Callback]:
    """The callbacks for ``model.fit`` in a TFX Trainer's ``run_fn``, writing under ``fn_args.model_run_dir``.

    TFX keeps ``model_run_dir`` as the trainer's ModelRun artifact, so TensorBoard and
    the Recsys diagnostics plugin show the run there (``tensorboard --logdir <its URI>``).
    What to build comes from ``fn_args.custom_config["tfrs_diag"]``: one section per
    callback, each a dict of that callback's keyword arguments, ``false`` to leave it out:

    - ``"tensorboard"``: Keras' ``TensorBoard`` (the TFX templates' one callback); on by default.
    - ``"gradients"``: `tfrs_diag.callbacks.GradientStatistics`; on by default.
    - ``"overfitting"``: `tfrs_diag.callbacks.OverfittingMonitor`; on when ``validation_data``
      is given (e.g. the eval split as a `tf.data.Dataset`).
    - ``"beyond_accuracy"``: `tfrs_diag.callbacks.BeyondAccuracy`; on when ``eval_data``
      (held-out interactions, a feature dict) and ``candidates`` (the catalog's ids) are
      given; its section must name ``query_key`` and ``item_key`` unless the model has them.

    Works under the ``MirroredStrategy`` TFX examples train with: build and compile the
    model in ``strategy.scope()`` and call this anywhere (the callbacks attach to the
    model at ``on_train_begin``).

    Args:
      fn_args: the `FnArgs` TFX passes to ``run_fn`` (any object with ``model_run_dir``
        and ``custom_config``).
      validation_data, eval_data, candidates: what the monitor and BeyondAccuracy read.

    Example:

    Not run here: ``fn_args`` comes from a TFX Trainer (tests/test_tfx_helpers.py calls this with a stand-in).

    >>> callbacks = tfrs_diag.tfx.diagnostic_callbacks(fn_args, validation_data=eval_ds)  # doctest: +SKIP
    >>> model.fit(train_ds, validation_data=eval_ds, callbacks=callbacks)                 # doctest: +SKIP
    """
    from tfrs_diag.callbacks import BeyondAccuracy, GradientStatistics, OverfittingMonitor  # noqa: PLC0415

    log_dir = getattr(fn_args, "model_run_dir", None)
    if not log_dir:
        raise ValueError("fn_args: has no model_run_dir; pass the FnArgs TFX gives run_fn")
    config = _config(fn_args)
    callbacks: list[tf.keras.callbacks.Callback] = []
    section = _section(config, "tensorboard", True)
    if section is not None:
        callbacks.append(tf.keras.callbacks.TensorBoard(log_dir=log_dir, **section))
    gradients = None
    section = _section(config, "gradients", True)
    if section is not None:
        gradients = GradientStatistics(log_dir, **section)
        callbacks.append(gradients)
    section = _section(config, "overfitting", validation_data is not None)
    if section is not None:
        if validation_data is None:
            raise ValueError("validation_data: the 'overfitting' section needs it (e.g. the eval split's dataset)")
        section.setdefault("gradient_statistics", gradients)
        callbacks.append(OverfittingMonitor(log_dir, validation_data, **section))
    section = _section(config, "beyond_accuracy", eval_data is not None and candidates is not None)
    if section is not None:
        if eval_data is None or candidates is None:
            raise ValueError("eval_data, candidates: the 'beyond_accuracy' section needs both (held-out "
                             "interactions and the catalog's item ids)")
        callbacks.append(BeyondAccuracy(log_dir, eval_data, candidates, **section))
    return callbacks


def save_towers(query_tower: tf.keras.Model, candidate_tower: tf.keras.Model, serving_model_dir: str) -> dict[str, str]:
    """Saves the two towers under ``serving_model_dir`` where `RecommenderEvaluator` loads them.

    Call it at the end of ``run_fn`` with ``fn_args.serving_model_dir`` (after saving any
    serving signature you push there, e.g. a `tfrs.layers.factorized_top_k.BruteForce`
    index); each tower must have been called once (``fit`` does that).

    Returns:
      ``{"query": path, "candidate": path}``.

    Example:

    Not run here: it needs a trained model (tests/test_tfx_helpers.py saves and reloads one).

    >>> tfrs_diag.tfx.save_towers(model.user_model, model.movie_model, fn_args.serving_model_dir)  # doctest: +SKIP
    """
    paths = {"query": os.path.join(serving_model_dir, QUERY_TOWER_DIR),
             "candidate": os.path.join(serving_model_dir, CANDIDATE_TOWER_DIR)}
    for key, tower in (("query", query_tower), ("candidate", candidate_tower)):
        if not isinstance(tower, tf.keras.Model):
            raise ValueError(f"{key}_tower: must be a Keras model (e.g. model.user_model), got {type(tower).__name__}")
        tf.keras.models.save_model(tower, paths[key], save_format="tf", include_optimizer=False)
    return paths


def load_towers(model_uri: str) -> tuple[tf.keras.Model, tf.keras.Model]:
    """The towers `save_towers` wrote, from a `Model` artifact's URI or a serving-model folder.

    A TFX Trainer writes the serving model under ``<uri>/Format-Serving``; both are looked in.
    """
    for root in (os.path.join(model_uri, "Format-Serving"), model_uri):
        query, candidate = os.path.join(root, QUERY_TOWER_DIR), os.path.join(root, CANDIDATE_TOWER_DIR)
        if os.path.isdir(query) and os.path.isdir(candidate):
            return (tf.keras.models.load_model(query, compile=False),
                    tf.keras.models.load_model(candidate, compile=False))
    raise ValueError(f"model: no saved towers under {model_uri!r} (looked for {QUERY_TOWER_DIR}/ and "
                     f"{CANDIDATE_TOWER_DIR}/, also under Format-Serving/); save them in run_fn with "
                     "tfrs_diag.tfx.save_towers(query_tower, candidate_tower, fn_args.serving_model_dir)")
