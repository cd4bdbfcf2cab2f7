# The two commands of the README: `make demo` and `make test`. Each creates .venv if it is missing,
# installing the exact versions (and hashes) in requirements.lock.
#   make lock         regenerate requirements.lock and requirements-runtime.lock (the Dockerfile's) with the
#                     newest releases pyproject.toml's ranges allow (uv, in a throwaway .venv-lock); then make test
#   make test-latest  the newest releases of everything, no lock, in a separate .venv-latest, then the unit
#                     tests: finds breakage by a new release on purpose, before a new machine does
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
LATEST_VENV ?= .venv-latest
LOCK_VENV ?= .venv-lock
# one resolution for Python 3.11 and later on any platform (every wheel's hash), the same for both files
UV_COMPILE = $(LOCK_VENV)/bin/uv pip compile pyproject.toml --universal --python-version 3.11 --generate-hashes \
	--upgrade --quiet --custom-compile-command 'make lock'

CHECK_PYTHON = @$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is needed")'

.PHONY: demo test lint test-latest lock up soak clean sshd

$(VENV)/.installed: pyproject.toml requirements.lock
	$(CHECK_PYTHON)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --require-hashes -r requirements.lock
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/wf demo

up: $(VENV)/.installed
	$(VENV)/bin/wf up

test: lint sshd
	$(PY) -m pytest -q $(PYTEST_ARGS)

# ruff (pyproject.toml's rules) over everything, mypy (strict on services/ and schemas/, checked on wf/)
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# the ssh job's tests start a real sshd (tests/sshd.py): install Debian's openssh-server when
# /usr/sbin/sshd is missing and apt-get is there (as root, or with password-less sudo; quietly,
# apt-get update if needed, the system's sshd not started). Elsewhere those tests skip, saying why
# (under CI, with `CI` set, they fail instead).
sshd:
	@test -x /usr/sbin/sshd || ! command -v apt-get >/dev/null 2>&1 || $(PYTHON) -m tests.sshd install

test-latest:  ## the newest release of every dependency (no lock) in $(LATEST_VENV), then the unit tests
	$(CHECK_PYTHON)
	$(PYTHON) -m venv $(LATEST_VENV)
	$(LATEST_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LATEST_VENV)/bin/python -m pip install --quiet --upgrade --upgrade-strategy eager -e '.[dev]'
	$(LATEST_VENV)/bin/python -m pip freeze --exclude-editable
	$(LATEST_VENV)/bin/python -m pytest -q tests/unit $(PYTEST_ARGS)

lock:  ## regenerate both lock files with the newest releases within pyproject.toml's ranges
	$(CHECK_PYTHON)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install --quiet --upgrade uv
	$(UV_COMPILE) --extra dev -o requirements.lock
	$(UV_COMPILE) --constraint requirements.lock -o requirements-runtime.lock

soak: $(VENV)/.installed  ## random faults over many workflows for WF_SOAK_S seconds (default 600)
	$(PY) -m pytest -q -s -m soak tests/chaos $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) $(LATEST_VENV) $(LOCK_VENV) .wf .pytest_cache
