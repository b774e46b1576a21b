"""The "Recsys diagnostics" TensorBoard plugin (``tensorboard --logdir LOGDIR``, tab ``tfrs_diag``).

Registered through the ``tensorboard_plugins`` entry point; see `plugin` and docs/plugin.md.
"""
