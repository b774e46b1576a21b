"""`Occlusion`: the drop in output when one group is replaced by its baseline.

``value_g = f(x) - v(all groups but g)``, with ``v`` averaged over the baseline rows as
in `tfrs_diag.explain.Shapley`. One coalition per group: the cheapest method, exact
for models additive in the groups, blind to interactions (two groups that only matter
together both get the full effect).

Not run here: these lines need your compiled model and data (tests/test_conformance.py runs the same calls on the TFRS tutorials' models).

>>> a = Occlusion(model, background).attribute(examples)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from tfrs_diag.explain._core import Explainer
from tfrs_diag.explain.attribution import Attribution


class Occlusion(Explainer):
    """Leave-one-group-out attributions (arguments as in `tfrs_diag.explain.Explainer`).

    ``base_value`` is the output with every group at the baseline.
    """

    method = "occlusion"

    def attribute(self, examples: Mapping[str, Any], labels: Sequence[str] | None = None) -> Attribution:
        rows, outputs, labels = self._prepare(examples, labels)
        g = self.num_groups
        masks = np.concatenate([np.zeros((1, g)), 1.0 - np.eye(g)]).astype(np.float32)
        v = self.coalition_values(rows, masks, progress=True)
        return self._finish(Attribution(self.method, outputs[:, None] - v[:, 1:], v[:, 0], outputs, self.group_names, labels,
                           extras={"baseline": self.baseline}))
