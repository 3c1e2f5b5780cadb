# Cortex: the two commands a new user needs are `make run` and `make test`.
# Both set everything up themselves on a fresh machine with Python 3.11.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PORT   ?= 4000

.PHONY: run test lint venv dev-venv clean

run: $(VENV)/.runtime
	PORT=$(PORT) exec $(BIN)/gunicorn -c gunicorn.conf.py wsgi:app

test: lint
	$(BIN)/pytest

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy app providers wsgi.py

venv: $(VENV)/.runtime
dev-venv: $(VENV)/.dev

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.runtime: requirements.txt | $(VENV)/bin/python
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev: requirements.txt requirements-dev.txt | $(VENV)/bin/python
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $(VENV)/.runtime $@

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
