"""Capture: what is read from the model while it trains, inside the compiled step.

- `gradients`: `GradientCapture`, the in-graph statistics of the gradients the optimizer applies;
- `snapshots`: the rare branches of that step (snapshots, histograms, noise scale);
- `state`: the variables the step writes and the host reads;
- `variables`: which variables are watched, named by their layer paths;
- `checks`: set-up checks that turn a model a diagnostic cannot run on into one clear error.

`tfrs_diag.layers.EmbeddingProbe` is the other capture point: a layer the model wraps its
embeddings in, counting row usage in the forward pass.
"""

from tfrs_diag.capture.gradients import GradientCapture
from tfrs_diag.capture.state import EMBEDDING_COLUMNS, SNAPSHOT_COLUMNS
from tfrs_diag.capture.variables import TrackedVariable, variable_names

__all__ = ["EMBEDDING_COLUMNS", "SNAPSHOT_COLUMNS", "GradientCapture", "TrackedVariable", "variable_names"]
