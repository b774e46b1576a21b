"""Every ``>>>`` example in the package runs (one collector, no hand-kept module list).

An example that cannot run here (it needs a trained model or a log directory the
docstring only names) carries ``# doctest: +SKIP``; `test_skipped_examples_say_why`
makes each such docstring say why, in words, next to it.
"""

import doctest
import importlib
import pkgutil
import re

import numpy as np
import pytest
import tensorflow as tf

import tfrs_diag
from conftest import movielens_dir

MODULES = sorted(m.name for m in pkgutil.walk_packages(tfrs_diag.__path__, "tfrs_diag."))
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _import(name):
    """The module; its doctests skip, with the reason, where it needs an optional extra not installed."""
    if name == "tfrs_diag.tfx.component":
        pytest.importorskip("tfx.v1", reason="tfrs_diag.tfx.component needs TFX (make test-tfx runs it)")
    return importlib.import_module(name)


def _examples(module):
    finder = doctest.DocTestFinder(exclude_empty=True)
    return [t for t in finder.find(module, module.__name__) if t.examples]


@pytest.mark.parametrize("name", MODULES)
def test_examples_run(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples that write logs write them here
    if name == "tfrs_diag.datasets.movielens":  # its example reads the real files
        if not (movielens_dir() / "u.data").exists():
            pytest.skip(f"MovieLens-100k not found at {movielens_dir()} (set TFRS_DIAG_MOVIELENS_DIR)")
        monkeypatch.setenv("TFRS_DIAG_MOVIELENS_DIR", str(movielens_dir()))
    module = _import(name)
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    for test in _examples(module):
        test.globs = {**test.globs, "tf": tf, "np": np, "tfrs_diag": tfrs_diag}
        runner.run(test)
    assert runner.failures == 0, f"{runner.failures} failing examples in {name} (see the output above)"


_REASON = re.compile(r"(not run|skipped|placeholder|needs|illustrat|sketch)", re.I)


@pytest.mark.parametrize("name", MODULES)
def test_skipped_examples_say_why(name):
    module = _import(name)
    for test in _examples(module):
        skipped = [e for e in test.examples if e.options.get(doctest.SKIP)]
        if skipped and not _REASON.search(test.docstring or ""):
            pytest.fail(f"{test.name} skips {len(skipped)} examples without saying why "
                        "(say e.g. 'Not run here: needs a trained model' before them)")
