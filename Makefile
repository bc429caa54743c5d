# Two commands for a newcomer: `make run` and `make test`. Both bootstrap .venv first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PIP := $(BIN)/python -m pip
PYTEST_ARGS ?=
# Test files run on this many processes (pytest-xdist; a file stays on one). 1: one process,
# the default: with two, a timing-bound API overload test failed once in three full runs.
# Files go out in collection order (tests/conftest.py puts the slow ones first), not by
# how many tests they hold, so that no long file starts last.
TEST_WORKERS ?= 1
XDIST := $(if $(filter 1,$(TEST_WORKERS)),-p no:xdist,-n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder)
IMAGE_CHECK_ARGS ?=

.PHONY: run test lint typecheck unit integration venv clean bench bench-quick image-check

venv: $(STAMP)

# Re-install only when the pins or the project metadata change (idempotent).
$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(PIP) install -q --upgrade "pip>=24"
	$(PIP) install -q -c constraints.txt -e ".[dev,lightning,hf]"
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/cpsweep run search_spaces/quickstart.yaml

lint: $(STAMP)
	$(BIN)/ruff check cpsweep service trainables tests bench examples
	$(BIN)/ruff format --check cpsweep service trainables tests bench examples

typecheck: $(STAMP)
	$(BIN)/mypy

# Unit tests start no Ray, server or subprocess (tests/conftest.py fails one that does).
unit: $(STAMP)
	$(BIN)/pytest -m "not integration" $(PYTEST_ARGS)

integration: $(STAMP)
	$(BIN)/pytest $(XDIST) -m integration $(PYTEST_ARGS)

# Everything: lint, types, then every test, unit and integration.
test: lint typecheck
	$(BIN)/pytest $(XDIST) $(PYTEST_ARGS)

bench-quick: $(STAMP)
	$(BIN)/python bench/paper_repro.py --quick

bench: $(STAMP)
	$(BIN)/python bench/paper_repro.py

# Build the Ray image with podman on a plain Debian base and run it as Kubernetes would:
# read-only root, non-root, no network; a head and a worker run the quickstart sweep.
# Root only; not part of `make test` (BENCHMARKS.md, "The Ray image ...": too slow for CI).
image-check: $(STAMP)
	$(BIN)/python bench/image_check.py $(IMAGE_CHECK_ARGS)

clean:
	rm -rf $(VENV) runs mlruns mlflow.db .mypy_cache .ruff_cache .pytest_cache
