# The two set-up commands the README promises: `make demo` and `make test`.
# Both create .venv on a fresh machine and install what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: demo test lint types docs unit bench clean test-flask-dev

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

# The suite against a Flask source checkout, such as Flask's main branch
# (3.2, merged app and request contexts): make test-flask-dev FLASK_SRC=../flask
test-flask-dev:
	@test -n "$(FLASK_SRC)" || { echo "Set FLASK_SRC to a Flask source checkout."; exit 2; }
	$(PYTHON) -m venv .venv-flask-dev
	.venv-flask-dev/bin/python -m pip install -q -e '.[dev,celery,s3]'
	.venv-flask-dev/bin/python -m pip install -q --force-reinstall --no-deps $(FLASK_SRC)
	.venv-flask-dev/bin/python -m pytest $(PYTEST_ARGS)
