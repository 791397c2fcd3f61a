# Two commands do all set-up on a fresh machine (Python 3.11, Node 20, npm):
#   make run   - run one collection cycle against the local Microsoft 365 simulator
#   make test  - lint, type-check and run every test (starts Azurite and the simulator itself)
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck unit bench clean venv azurite

venv: $(STAMP)
$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

node_modules/.bin/azurite: package.json
	npm install --no-audit --no-fund --silent
	touch $@

azurite: node_modules/.bin/azurite

run: venv
	$(PY) scripts/run_local.py

lint: venv
	$(VENV)/bin/ruff check .

typecheck: venv
	$(VENV)/bin/mypy

test: venv azurite lint typecheck infra-check
	$(PY) -m pytest -q

bench: venv
	$(PY) -m bench

clean:
	rm -rf $(VENV) .venv-checkov node_modules .sim .run .state output .pytest_cache .mypy_cache .ruff_cache

-include infra/infra.mk
