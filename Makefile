# The two commands of the quick start: `make demo` and `make test`.
# Both create .venv on first use, so they work on a fresh machine with Python 3.11+ and make,
# in either order. `make demo` installs heddle alone (click and rich); `make test` adds what
# the tests need (pytest, Redis and Ray clients, linters).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HEDDLE := $(VENV)/.heddle-installed
TEST_DEPS := $(VENV)/.test-installed

.PHONY: demo test lint bench clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "heddle needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)

$(HEDDLE): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e .
	touch $(HEDDLE)

$(TEST_DEPS): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test,redis,ray]'
	touch $(TEST_DEPS) $(HEDDLE)

demo: $(HEDDLE)
	$(BIN)/heddle demo

lint: $(TEST_DEPS)
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples
	$(BIN)/mypy

test: lint
	$(BIN)/pytest --cov --cov-report=term

bench: $(TEST_DEPS)
	$(BIN)/python -m pip install --quiet -e '.[test,redis,ray,bench]'
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage htmlcov
