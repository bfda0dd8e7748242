# The two commands of the README. Everything else is reachable through `obs-platform --help`.
VENV ?= $(HOME)/.local/share/obs-platform/venv
export OBS_PLATFORM_VENV := $(VENV)
PYTEST_ARGS ?=

.PHONY: install run lint test test-fast

install:
	@bash scripts/install.sh

run: install
	$(VENV)/bin/obs-platform init --with-sample-data
	$(VENV)/bin/obs-platform run

lint: install
	$(VENV)/bin/ruff check --quiet .
	$(VENV)/bin/ruff format --check --quiet .

test: lint
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

test-fast: lint
	$(VENV)/bin/python -m pytest -m "not slow" $(PYTEST_ARGS)
