# facekit's two commands: `make demo` (the main job on embedded defaults) and `make test` (the whole fast suite).
# Both create .venv on a fresh machine and install the pinned dependencies, torch==2.13.0 (CPU) first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PLUGINS := $(sort $(wildcard plugins/*/pyproject.toml))
STAMP := $(VENV)/.facekit-installed
PYTEST_ARGS ?=

.PHONY: demo test test-slow lint format bench clean-venv

$(STAMP): pyproject.toml constraints.txt $(PLUGINS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]' $(foreach p,$(PLUGINS),-e $(dir $(p)))
	touch $@

demo: $(STAMP)
	$(BIN)/facekit plugins
	$(BIN)/facekit list
	$(BIN)/facekit check recipes/demo.yaml
	$(BIN)/python examples/average_faces.py --out demo-output

lint: $(STAMP)
	$(BIN)/ruff check facekit plugins tests benchmarks examples
	$(BIN)/ruff format --check facekit plugins tests benchmarks examples
	$(BIN)/mypy facekit

format: $(STAMP)
	$(BIN)/ruff format facekit plugins tests benchmarks examples
	$(BIN)/ruff check --fix facekit plugins tests benchmarks examples

test: lint
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python benchmarks/startup.py
	$(BIN)/python benchmarks/warp.py --quick

clean-venv:
	rm -rf $(VENV)
