# The two commands in README.md. Each creates or updates .venv from pyproject.toml
# when needed; constraints.txt pins this machine's versions (pip takes torch/torchvision
# from its local wheel files).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
CONSTRAINTS := constraints.txt
# Checks that run before the tests: lint, formatting, and the module map's import contracts.
LINT := $(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check . && $(VENV)/bin/lint-imports

.PHONY: run test bench

$(VENV)/.installed: pyproject.toml $(CONSTRAINTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	$(PY) -m pip install --quiet -c $(CONSTRAINTS) -e '.[test,cluster]'
	touch $@

run: $(VENV)/.installed
	$(PY) main.py

test: $(VENV)/.installed
	$(LINT)
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q

bench: $(VENV)/.installed
	$(PY) bench/prelabel_speed.py
