# Sextant: `make run` serves the portal, `make test` runs the whole suite. Both bootstrap .venv.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run test lint bench chromium example-data clean

setup: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt -r requirements-dev.txt
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

run: setup
	$(BIN)/sextant up

# Debian's chromium for the browser tests (Playwright cannot download its own browser here).
chromium:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }

test: setup chromium
	$(BIN)/ruff check .
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: setup
	$(BIN)/ruff check .

# Sextant against the tools analysts use instead (bench/README.md); `make bench ONLY=online,batch` runs some.
bench: setup chromium
	$(BIN)/python -m bench.run $(if $(ONLY),--only $(ONLY))

example-data: setup
	$(BIN)/python examples/generate_churn.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
