# Thin aliases. The two commands a new machine needs: `make run` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint fmt typecheck openapi constraints bench-check bench-parse bench-corpus clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	touch $(STAMP)

install: $(STAMP)

## Install, apply migrations and serve on the embedded default (SQLite file + in-process cache).
run: $(STAMP)
	$(BIN)/stoplist serve

## The whole test suite (PostgreSQL/Redis tests skip when absent unless STOPLIST_TEST_REQUIRE_SERVICES=1).
test: $(STAMP)
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

fmt: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: $(STAMP)
	$(BIN)/mypy

openapi: $(STAMP)
	$(BIN)/python -m app.http.openapi > openapi/openapi.json

## Pin what the image installs to what this environment runs (review the diff before committing).
constraints: $(STAMP)
	{ echo "# Versions the image installs (Dockerfile: pip install -c constraints.txt). Refresh deliberately"; \
	  echo "# with \`make constraints\` and review the diff."; \
	  $(BIN)/pip freeze --exclude-editable | grep -v '^stoplist=='; } > constraints.txt

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
