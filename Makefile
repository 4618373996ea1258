# One command each: `make demo` (the main job) and `make test` (the test suite). Both build .venv on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Local mirror of the public datasets (no network needed). Point it at your own copy, or leave it empty to download.
MIRROR ?= ../shared/data
WORK ?= runs/demo

.PHONY: setup test test-all lint demo bench clean

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

test: setup
	$(BIN)/python -m pytest -q -x --durations=15

test-all: setup
	$(BIN)/python -m pytest -q -m "" --durations=25

lint: setup
	$(BIN)/ruff check mmcrystal encoders tests scripts
	$(BIN)/ruff format --check mmcrystal encoders tests scripts

demo: setup
	$(BIN)/mmcrystal demo --workdir $(WORK) $(if $(MIRROR),--mirror $(MIRROR),)

clean:
	rm -rf $(VENV) runs .pytest_cache
