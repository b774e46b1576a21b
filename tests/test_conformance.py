"""Every diagnostic on every tutorial model (tests/conformance.py), against docs/compatibility.md.

Each cell must do what the table says: "works" (same loss as without the diagnostic,
its tags written, its values equal to an independent computation) or "clear error" (a
refusal at set-up naming the layer). A cell whose behaviour changes fails here until
the table is regenerated with ``python tests/conformance.py --write docs/compatibility.md``.
"""

import pytest

import conformance as C
import tutorial_models as T

CASES = T.cases()
DOC = str(C.__file__).rsplit("/tests/", 1)[0] + "/docs/compatibility.md"
EXPECTED = C.documented(DOC)
# The README quick start's model runs in every `make test -m "not slow"`; the rest is slow.
FAST = {"quickstart"}


def _params():
    for name in CASES:
        for diagnostic in C.DIAGNOSTICS:
            marks = () if name in FAST else (pytest.mark.slow,)
            yield pytest.param(name, diagnostic, marks=marks, id=f"{name}-{diagnostic}")


def test_the_table_lists_every_case_and_diagnostic():
    assert {name for name, _ in EXPECTED} == set(CASES)
    assert {d for _, d in EXPECTED} == set(C.DIAGNOSTICS)


@pytest.mark.parametrize("name,diagnostic", list(_params()))
def test_cell(name, diagnostic):
    outcome = C.run_cell(CASES[name], diagnostic)
    assert outcome.status == EXPECTED[name, diagnostic], outcome.detail
