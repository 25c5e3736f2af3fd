# The two set-up commands the README promises: `make demo` and `make test`.
# Both create .venv on a fresh machine and install what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: demo test lint types docs unit bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,celery,s3]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/flask --app examples.app run --host 127.0.0.1 --port 5000

lint: $(STAMP)
	$(BIN)/ruff format --check src tests examples bench docs
	$(BIN)/ruff check src tests examples bench docs

types: $(STAMP)
	$(BIN)/mypy

docs: $(STAMP)
	$(BIN)/sphinx-build -W --keep-going -q -b html docs docs/_build/html

unit: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test: lint types docs unit

bench: $(STAMP)
	$(BIN)/python -m pip install -q -r bench/requirements.txt
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) docs/_build
