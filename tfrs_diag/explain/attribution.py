"""`Attribution`: what every explainer returns, one row per example, one column per group.

>>> import numpy as np
>>> a = Attribution("shapley", np.array([[0.5, -0.25]]), base_value=3.0, outputs=np.array([3.25]),
...                 group_names=("user_id", "item_id"))
>>> a.values.sum(axis=1) + a.base_value  # efficiency: the values explain output - base
array([3.25])
>>> a.to_dict()["group_names"]
['user_id', 'item_id']
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np


def _cell(x: float) -> str:
    if not np.isfinite(x):
        return str(x)
    return f"{x:+.4f}" if abs(x) < 1e4 else f"{x:+.3e}"


@dataclasses.dataclass
class Attribution:
    """Attributions of model outputs to feature groups.

    Attributes:
      method: name of the method that produced them (``"shapley"``, ``"integrated_gradients"``, ...).
      values: ``[n, groups]`` attribution of each example's output to each group.
      base_value: the reference output the values are measured from, per example ``[n]``
        (for Shapley with a background: the mean output over the background rows, the same
        for every example). ``values.sum(1) + base_value == outputs`` for methods with the
        efficiency (completeness) property.
      outputs: ``[n]`` the model's output on each example.
      group_names: one name per column of ``values``.
      examples: optional ``[n]`` labels of the examples (shown in tables and TensorBoard).
      stderr: optional ``[n, groups]`` standard error (sampled Shapley, permutation importance).
      delta: optional ``[n]`` completeness gap ``|sum(values) - (outputs - base_value)|`` (IG).
      fidelity: optional ``[n]`` weighted R^2 of a surrogate fit (LIME).
      extras: method-specific details (e.g. number of coalitions evaluated, metric names).
    """

    method: str
    values: np.ndarray
    base_value: np.ndarray | float
    outputs: np.ndarray
    group_names: Sequence[str]
    examples: Sequence[str] | None = None
    stderr: np.ndarray | None = None
    delta: np.ndarray | None = None
    fidelity: np.ndarray | None = None
    extras: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        self.values = np.asarray(self.values, dtype=np.float64)
        if self.values.ndim != 2:
            raise ValueError(f"values must be [n, groups], got shape {self.values.shape}")
        n, g = self.values.shape
        self.group_names = tuple(str(x) for x in self.group_names)
        if len(self.group_names) != g:
            raise ValueError(f"group_names has {len(self.group_names)} names for {g} value columns")
        self.outputs = np.asarray(self.outputs, dtype=np.float64).reshape(-1)
        if self.outputs.shape != (n,):
            raise ValueError(f"outputs must have {n} entries, got shape {self.outputs.shape}")
        self.base_value = np.broadcast_to(np.asarray(self.base_value, dtype=np.float64), (n,)).copy()
        if self.examples is None:
            self.examples = tuple(f"example {i}" for i in range(n))
        self.examples = tuple(str(x) for x in self.examples)
        if len(self.examples) != n:
            raise ValueError(f"examples has {len(self.examples)} labels for {n} rows")
        for name in ("stderr",):
            v = getattr(self, name)
            if v is not None:
                setattr(self, name, np.asarray(v, dtype=np.float64).reshape(n, g))
        for name in ("delta", "fidelity"):
            v = getattr(self, name)
            if v is not None:
                setattr(self, name, np.broadcast_to(np.asarray(v, dtype=np.float64), (n,)).copy())

    @property
    def num_examples(self) -> int:
        return self.values.shape[0]

    def __len__(self) -> int:
        return self.num_examples

    def __getitem__(self, name: str) -> np.ndarray:
        """The ``[n]`` column of one group: ``attribution["item_id"]``."""
        try:
            return self.values[:, self.group_names.index(name)]
        except ValueError:
            raise KeyError(f"no group {name!r}; groups: {list(self.group_names)}") from None

    def ranking(self, example: int = 0) -> list[tuple[str, float]]:
        """Groups of one example sorted by absolute attribution, largest first."""
        row = self.values[example]
        order = np.argsort(-np.abs(row), kind="stable")
        return [(self.group_names[j], float(row[j])) for j in order]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (lists and floats); the TensorBoard record's payload is built from it."""
        out: dict[str, Any] = {
            "method": self.method,
            "group_names": list(self.group_names),
            "examples": list(self.examples),
            "values": self.values.tolist(),
            "base_value": self.base_value.tolist(),
            "outputs": self.outputs.tolist(),
        }
        for name in ("stderr", "delta", "fidelity"):
            v = getattr(self, name)
            if v is not None:
                out[name] = v.tolist()
        if self.extras:
            out["extras"] = dict(self.extras)
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Attribution":
        """Inverse of `to_dict`."""
        kwargs = {k: d[k] for k in ("method", "values", "base_value", "outputs", "group_names", "examples")}
        for name in ("stderr", "delta", "fidelity"):
            if d.get(name) is not None:
                kwargs[name] = d[name]
        return cls(**kwargs, extras=dict(d.get("extras", {})))

    def table(self, max_examples: int = 20) -> str:
        """A text table: one row per example, one column per group, then base and output."""
        headers = ["example", *self.group_names, "base", "output"]
        extra_cols = [(name, getattr(self, name)) for name in ("delta", "fidelity") if getattr(self, name) is not None]
        headers += [name for name, _ in extra_cols]
        rows = []
        for i in range(min(self.num_examples, max_examples)):
            cells = [self.examples[i]]
            for j in range(len(self.group_names)):
                cell = _cell(self.values[i, j])
                if self.stderr is not None:
                    cell += f" ±{self.stderr[i, j]:.2g}"
                cells.append(cell)
            cells += [f"{self.base_value[i]:.4f}", f"{self.outputs[i]:.4f}"]
            cells += [f"{col[i]:.2e}" if name == "delta" else f"{col[i]:.4f}" for name, col in extra_cols]
            rows.append(cells)
        widths = [max(len(str(r[j])) for r in [headers, *rows]) for j in range(len(headers))]
        lines = ["  ".join(str(c).ljust(w) if j == 0 else str(c).rjust(w) for j, (c, w) in
                           enumerate(zip(r, widths))) for r in [headers, *rows]]
        if self.num_examples > max_examples:
            lines.append(f"... {self.num_examples - max_examples} more examples")
        return f"{self.method} attributions (values sum to output - base)\n" + "\n".join(lines) \
            if self.method in ("shapley", "integrated_gradients") else f"{self.method} attributions\n" + "\n".join(lines)

    def __str__(self) -> str:
        return self.table()
