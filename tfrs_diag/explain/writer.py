"""Attributions to TensorBoard, per the summary schema (docs/design.md section 4).

- ``tfrs_diag/explain/attributions``: a ``"attribution_table"`` JSON record with payload
  ``{"method", "group_names", "examples", "values", "base_value", "outputs", "epoch"}``
  (``base_value`` a number when every example shares it, else one per example), which the
  tfrs_diag TensorBoard plugin renders;
- ``tfrs_diag/explain/bar_chart``: an image summary drawn with numpy: the first image
  shows the mean attribution per group over the examples, the next ones each example's
  (groups top to bottom in ``group_names`` order, positive bars right of the zero line in
  green, negative left in red, scaled to the largest |value| of that image);
- ``tfrs_diag/explain/mean_abs/<group>``: mean |attribution| over the examples, a scalar
  the stock Scalars dashboard plots across epochs.

Not run here: these lines need your compiled model and data (tests/test_conformance.py runs the same calls on the TFRS tutorials' models).

>>> write_attribution(attribution, "logs/run1", step=100, epoch=0)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tfrs_diag import summary as S
from tfrs_diag._keras import tf
from tfrs_diag.explain.attribution import Attribution

TABLE_TAG = S.tag("explain", "attributions")
CHART_TAG = S.tag("explain", "bar_chart")
RECORD_TYPE = "attribution_table"

_POSITIVE = np.array([46, 160, 67], np.uint8)
_NEGATIVE = np.array([214, 39, 40], np.uint8)
_AXIS = np.array([90, 90, 90], np.uint8)


def attribution_payload(attribution: Attribution, epoch: int | None = None) -> dict[str, Any]:
    """The record payload the plugin renders (see the module docstring)."""
    base = attribution.base_value
    payload = {
        "method": attribution.method,
        "group_names": list(attribution.group_names),
        "examples": list(attribution.examples),
        "values": attribution.values.tolist(),
        "base_value": float(base[0]) if np.allclose(base, base[0], rtol=0, atol=1e-9) else base.tolist(),
        "outputs": attribution.outputs.tolist(),
        "epoch": epoch,
    }
    for name in ("stderr", "delta", "fidelity"):
        value = getattr(attribution, name)
        if value is not None:
            payload[name] = value.tolist()
    return payload


def bar_chart(values: np.ndarray, bar_height: int = 14, gap: int = 4, width: int = 240) -> np.ndarray:
    """``[H, W, 3]`` uint8 image of signed horizontal bars, one per entry of ``values``.

    >>> bar_chart(np.array([1.0, -0.5])).shape
    (40, 240, 3)
    """
    values = np.nan_to_num(np.asarray(values, dtype=np.float64).reshape(-1))
    height = len(values) * (bar_height + gap) + gap
    image = np.full((height, width, 3), 255, np.uint8)
    mid = width // 2
    scale = (mid - 4) / max(float(np.abs(values).max()) if values.size else 0.0, 1e-12)
    for i, v in enumerate(values):
        top = gap + i * (bar_height + gap)
        length = int(round(abs(v) * scale))
        if v >= 0:
            image[top:top + bar_height, mid:mid + length] = _POSITIVE
        else:
            image[top:top + bar_height, mid - length:mid] = _NEGATIVE
    image[:, mid] = _AXIS
    return image


def bar_chart_images(attribution: Attribution, max_examples: int = 3) -> np.ndarray:
    """``[1 + k, H, W, 3]``: the mean over examples, then the first ``k`` examples."""
    rows = [attribution.values.mean(axis=0)] + list(attribution.values[:max_examples])
    return np.stack([bar_chart(r) for r in rows])


def write_attribution(attribution: Attribution, log_dir: str, step: int, *, epoch: int | None = None,
                      run: str = "train", images: bool = True, max_images: int = 3) -> None:
    """Writes the table record, the bar-chart image and the mean-|value| scalars of ``attribution``."""
    writer = S.writer_for(log_dir, run)
    with writer.as_default():
        S.write_record(TABLE_TAG, RECORD_TYPE, attribution_payload(attribution, epoch), step)
        if images:
            order = ", ".join(f"{i + 1}. {g}" for i, g in enumerate(attribution.group_names))
            shown = ", ".join(attribution.examples[:max_images])
            tf.summary.image(CHART_TAG, bar_chart_images(attribution, max_images), step=int(step),
                             max_outputs=max_images + 1,
                             description=f"{attribution.method} attributions; bars top to bottom: {order}. "
                                         f"Image 1: mean over the examples; then: {shown}.")
        for j, group in enumerate(attribution.group_names):
            S.write_scalar(S.tag("explain", "mean_abs", group), float(np.abs(attribution.values[:, j]).mean()), step)
    writer.flush()
