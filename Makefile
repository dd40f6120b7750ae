# Two commands do all the set-up: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP_RUN := $(VENV)/.installed-run
STAMP_DEV := $(VENV)/.installed-dev

.PHONY: run test check bench bench-smoke clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP_RUN): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[tokenizer]"
	touch $@

$(STAMP_DEV): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@ $(STAMP_RUN)

run: $(STAMP_RUN)
	$(BIN)/lms-metrics-proxy serve

test: $(STAMP_DEV)
	PATH="$(CURDIR)/$(BIN):$$PATH" scripts/test

check: $(STAMP_DEV)
	PATH="$(CURDIR)/$(BIN):$$PATH" scripts/check

bench: $(STAMP_DEV)
	PATH="$(CURDIR)/$(BIN):$$PATH" bench/run.sh

bench-smoke: $(STAMP_DEV)
	PATH="$(CURDIR)/$(BIN):$$PATH" bench/run.sh --smoke

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
