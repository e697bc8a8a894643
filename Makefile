# The one task runner. Every target sets up what it needs by itself.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.donjon-installed

.PHONY: help venv system-deps node-deps test lint bench demo clean

help:
	@echo "make demo   - run the demo at http://127.0.0.1:8000 (SQLite store)"
	@echo "make test   - run the whole test suite (starts real Redis and PostgreSQL)"
	@echo "make lint   - ruff + mypy --strict"
	@echo "make bench  - run the benchmarks and rewrite benchmarks/REPORT.md"

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -U "pip>=25.1"
	$(PY) -m pip install -q -c constraints.txt -e ".[redis,postgres,crypto,starlette,prometheus,demo]" \
	    --group tests --group typing --group dev --group bench
	touch $(STAMP)

venv: $(STAMP)

# Real servers for the tests: Redis and PostgreSQL from Debian's packages.
system-deps:
	@bash scripts/system-deps.sh

# The real Node packages the interoperability tests run against (npm registry).
node-deps: tests/node/node_modules/.package-lock.json

tests/node/node_modules/.package-lock.json: tests/node/package.json tests/node/package-lock.json
	cd tests/node && npm ci --no-audit --no-fund --loglevel=error

test: venv system-deps node-deps
	$(PY) -m pytest $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src
	$(VENV)/bin/mypy

bench: venv system-deps
	$(PY) benchmarks/run.py

demo: venv
	$(VENV)/bin/donjon demo

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
