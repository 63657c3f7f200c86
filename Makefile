# One-command entry points. `make serve` and `make test` work on a fresh machine with Python 3.11+.
#   make serve PORT=8001        another port (also HOST=0.0.0.0)
#   make serve TORCH=cpu|cuda   force a torch build (default: auto, see scripts/install-torch.sh), or pip
#                               arguments: TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH ?= auto
PORT ?=
HOST ?=
PYTEST_ARGS ?=

.PHONY: install install-test serve test bench clean

$(PY):
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

install: $(PY)
	TORCH='$(TORCH)' sh scripts/install-torch.sh $(PY)
	$(PY) -m pip install -q -e .

install-test: install
	$(PY) -m pip install -q -e '.[test]'

# The access log (one line per request) is on here, off by default in `pulid serve`: PULID_ACCESS_LOG=0 turns it off.
serve: export PULID_ACCESS_LOG ?= true
serve: install
	$(VENV)/bin/pulid serve $(if $(HOST),--host $(HOST)) $(if $(PORT),--port $(PORT))

test: install-test
	$(PY) -m pytest $(PYTEST_ARGS)

# Cog (a serving peer in bench/bench_peer.py) pins its own fastapi: it gets a venv of its own.
COG_VENV ?= .venv-cog
$(COG_VENV)/bin/python:
	python3 -m venv $(COG_VENV)
	$(COG_VENV)/bin/python -m pip install -q cog==0.16.12

bench: install-test $(COG_VENV)/bin/python
	$(PY) -m pip install -q -e '.[test,bench]'
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) $(COG_VENV) data build *.egg-info
