# The two commands of the README: `make demo` and `make test`. Each creates .venv if it is missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test up soak clean

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is needed")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/wf demo

up: $(VENV)/.installed
	$(VENV)/bin/wf up

test: $(VENV)/.installed
	$(PY) -m pytest -q $(PYTEST_ARGS)

soak: $(VENV)/.installed  ## random faults over many workflows for WF_SOAK_S seconds (default 600)
	$(PY) -m pytest -q -s -m soak tests/chaos $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .wf .pytest_cache
