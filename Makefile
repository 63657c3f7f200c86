# One-command entry points. `make serve` and `make test` work on a fresh machine with Python 3.11+.
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: install install-test serve test bench clean

$(PY):
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

install: $(PY)
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e .

install-test: install
	$(PY) -m pip install -q -e '.[test]'

serve: install
	$(VENV)/bin/pulid serve --model auto

test: install-test
	$(PY) -m pytest $(PYTEST_ARGS)

bench: install-test
	$(PY) -m pip install -q -e '.[test,bench]'
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) data build *.egg-info
