"""Blessing rules: absolute bounds on metrics and bounds on their change against a baseline."""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Mapping, Sequence

_RULE = re.compile(r"^\s*(?:(change)\(\s*(?P<cm>[^()\s]+)\s*\)|(?P<m>[^()\s<>=]+))\s*(?P<op>>=|<=)\s*"
                   r"(?P<v>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")


@dataclasses.dataclass(frozen=True)
class Threshold:
    """One rule: ``metric >= bound``, ``metric <= bound``, or the same on ``change(metric)``,
    the current value minus the baseline model's."""

    metric: str
    op: str
    bound: float
    change: bool = False

    def __str__(self) -> str:
        name = f"change({self.metric})" if self.change else self.metric
        return f"{name} {self.op} {self.bound:g}"


@dataclasses.dataclass(frozen=True)
class Check:
    """A rule with the value it was checked on; ``passed`` is None when it could not be checked."""

    rule: Threshold
    value: float | None
    passed: bool | None
    note: str = ""

    def to_dict(self) -> dict:
        return {"rule": str(self.rule), "value": self.value, "passed": self.passed, "note": self.note}


def parse_thresholds(rules: str | Sequence[str]) -> list[Threshold]:
    """Parses rules, one per line or separated by ``;`` (a string), or a sequence of strings.

    >>> [str(t) for t in parse_thresholds("ndcg_at_10 >= 0.05; change(exposure_gini_at_10) <= 0.02")]
    ['ndcg_at_10 >= 0.05', 'change(exposure_gini_at_10) <= 0.02']
    """
    if isinstance(rules, str):
        rules = re.split(r"[;\n]", rules)
    out = []
    for text in rules:
        if not text.strip():
            continue
        m = _RULE.match(text)
        if m is None:
            raise ValueError(f"thresholds: cannot read the rule {text.strip()!r}; write 'METRIC >= NUMBER', "
                             "'METRIC <= NUMBER' or 'change(METRIC) <= NUMBER' (e.g. 'ndcg_at_10 >= 0.05', "
                             "'user_group/ndcg_at_10_ratio >= 0.8', 'change(exposure_gini_at_10) <= 0.02')")
        change = m.group(1) is not None
        out.append(Threshold(m.group("cm") if change else m.group("m"), m.group("op"), float(m.group("v")), change))
    return out


def check_thresholds(rules: str | Sequence[str] | Sequence[Threshold], metrics: Mapping[str, float],
                     baseline: Mapping[str, float] | None = None) -> list[Check]:
    """Checks every rule on ``metrics`` (and ``baseline`` for ``change(...)`` rules).

    A metric the evaluation did not compute fails its rule (a misspelt name must not
    bless a model) with a note listing what was computed; a ``change`` rule without a
    baseline is not checked (``passed`` None: the first model of a pipeline has none)
    and does not block the blessing.

    >>> checks = check_thresholds("ndcg_at_10 >= 0.05; change(gini_at_10) <= 0.02",
    ...                           {"ndcg_at_10": 0.07, "gini_at_10": 0.55}, {"gini_at_10": 0.5})
    >>> [(str(c.rule), c.passed) for c in checks]
    [('ndcg_at_10 >= 0.05', True), ('change(gini_at_10) <= 0.02', False)]
    """
    if not isinstance(rules, str) and all(isinstance(r, Threshold) for r in rules):
        parsed = list(rules)
    else:
        parsed = parse_thresholds(rules)
    checks = []
    for rule in parsed:
        value = metrics.get(rule.metric)
        if value is None or not math.isfinite(value):
            note = ("not computed by this evaluation (undefined, or not a metric name); computed: "
                    + ", ".join(sorted(metrics))) if value is None else "not finite"
            checks.append(Check(rule, value, False, note))
            continue
        if rule.change:
            if baseline is None:
                checks.append(Check(rule, None, None, "no baseline model: not checked"))
                continue
            before = baseline.get(rule.metric)
            if before is None or not math.isfinite(before):
                checks.append(Check(rule, None, False, "the baseline has no finite value of this metric"))
                continue
            value = value - before
        passed = value >= rule.bound if rule.op == ">=" else value <= rule.bound
        checks.append(Check(rule, float(value), bool(passed)))
    return checks


def is_blessed(checks: Sequence[Check]) -> bool:
    """True when no rule failed (rules not checked for want of a baseline do not block)."""
    return all(c.passed is not False for c in checks)
