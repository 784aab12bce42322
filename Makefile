# The two commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-dev

.PHONY: demo test lint docs install install-dev integration clean proto

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $@

# verl and TransferQueue without their dependencies: the `integrations` extra (in `dev`) installs
# the few that the TEMPO integration tests need (see pyproject.toml).
NODEPS := verl==0.9.1 TransferQueue==0.1.11

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[dev]'
	$(BIN)/python -m pip install -q --no-deps $(NODEPS)
	touch $@ $(VENV)/.installed

# The JavaScript device client (clients-js, Node 20): its locked dependencies.
JS       := clients-js
JS_STAMP := $(JS)/node_modules/.package-lock.json

$(JS_STAMP): $(JS)/package.json $(JS)/package-lock.json
	cd $(JS) && npm ci --no-audit --no-fund
	touch $@

install: $(VENV)/.installed
install-dev: $(STAMP) $(JS_STAMP)

## Set up and run the main job on the embedded default.
demo: $(VENV)/.installed
	$(BIN)/fedhh simulate

## Set up and run the whole test suite (lint included).
test: $(STAMP) $(JS_STAMP) lint docs
	cd $(JS) && npm test
	$(BIN)/python -m pytest -q

## The API reference from the docstrings (pdoc) into build/api; a module pdoc cannot import or
## render fails it. The generated gRPC code (fedhh.wire.v1) is left out.
docs: $(STAMP)
	rm -rf build/api
	$(BIN)/python -W error::UserWarning -m pdoc -o build/api \
		fedhh fedhh.server fedhh.clients '!fedhh.wire.v1'
	@echo "API reference: build/api/index.html"

## TEMPO in the real verl 0.9.1 and TRL 1.16.0 (also part of `make test`).
integration: $(STAMP)
	$(BIN)/python -m pytest -q -m integration

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache

## Regenerate the gRPC code of protos/fedhh/v1 into fedhh/wire/v1 (checked in).
proto: $(STAMP)
	$(BIN)/python -m fedhh.wire.codegen
