# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.tfrs_diag-installed
export TF_USE_LEGACY_KERAS := 1
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: demo test test-all test-tfx bench install clean

install: $(STAMP)

$(STAMP): pyproject.toml setup.cfg constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/tfrs-diag demo $(DEMO_ARGS)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

# The TFX leg: its own Python 3.10 virtualenv with the stack constraints-tfx.txt pins (TFX 1.16,
# TensorFlow 2.16, tf-keras 2.16, TFRS 0.7.3, NumPy 1.26), then the fast suite on that stack (the
# oldest TensorFlow setup.cfg allows), the tfrs_diag.tfx tests and the example pipeline end to
# end. Separate pytest processes: the pipeline's MirroredStrategy and the tests' strategy cannot
# share one process.
TFX_VENV ?= .venv-tfx
# The first of these that really runs Python 3.10 (a pyenv shim named python3.10 may not).
TFX_PYTHON ?= $(shell for p in python3.10 $(HOME)/.pyenv/versions/3.10.13/bin/python $(HOME)/.pyenv/versions/3.10/bin/python; do \
	$$p -c 'import sys; assert sys.version_info[:2] == (3, 10)' 2>/dev/null && echo $$p && break; done)
TFX_PY := $(TFX_VENV)/bin/python
TFX_STAMP := $(TFX_VENV)/.tfrs_diag-installed

$(TFX_STAMP): pyproject.toml setup.cfg constraints-tfx.txt
	@test -n "$(TFX_PYTHON)" || { echo "make test-tfx: needs Python 3.10 (TFX 1.16 requires Python >=3.9,<3.11): put python3.10 on PATH or pass TFX_PYTHON=/path/to/python3.10" >&2; exit 1; }
	@test -x $(TFX_PY) || $(TFX_PYTHON) -m venv $(TFX_VENV)
	$(TFX_PY) -m pip install -q --disable-pip-version-check -c constraints-tfx.txt -e '.[tfx]' pytest
	@touch $(TFX_STAMP)

test-tfx: $(TFX_STAMP)
	$(TFX_PY) -m pytest -p no:cacheprovider -m "not slow" $(PYTEST_ARGS)
	$(TFX_PY) -m pytest -p no:cacheprovider -m slow tests/test_tfx_helpers.py $(PYTEST_ARGS)
	$(TFX_PY) -m pytest -p no:cacheprovider tests/tfx $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) benchmarks/gradient_overhead.py

clean:
	rm -rf $(VENV) $(TFX_VENV) build *.egg-info
