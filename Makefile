# The two commands a new machine needs: `make demo` and `make test`.
# Each creates the virtual environment if it is missing and installs mtlzoo into it.
PYTHON ?= python3
VENV ?= .venv
# extra pip arguments, e.g. a CPU-only torch (no CUDA libraries, ~3 GB less):
#   make demo PIP_ARGS="--extra-index-url https://download.pytorch.org/whl/cpu"
PIP_ARGS ?=
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint install clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(PIP_ARGS) -e ".[test,bench]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/mtlzoo train configs/quickstart.yaml

# pytest-xdist: one worker per core (each worker's torch takes its share of the cores, tests/conftest.py)
test: $(STAMP)
	$(PY) -m pytest -n auto --dist worksteal

# ruff at zero findings on the whole tree; mypy at zero errors on the packages pyproject.toml lists
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m mypy

clean:
	rm -rf runs .pytest_cache
