"""View: what a person reads. `tensorboard` is the dashboard plugin, `report` the terminal text.

Both read the logs back through `tfrs_diag.summary.events` and name tags through
`tfrs_diag.summary.schema`; neither writes to a run.
"""
