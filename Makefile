# `make example`: set up and materialize example_project end to end.
# `make test`:    set up and run the whole test suite (what .ci/run runs).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
export FURTHER_ROOT ?= $(CURDIR)/.further

.PHONY: setup example test bench bench-slurm dev clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[test]"
	touch $@

example: setup
	mkdir -p "$(DAGSTER_HOME)"
	$(BIN)/dagster asset materialize -m example_project --select '*' \
	  --partition-range "$$($(BIN)/further-dagster partition-range -m example_project)"

test: setup
	$(BIN)/pytest

bench: setup
	$(BIN)/python bench/bench_overhead.py

# 100-point sweep on the local Slurm (started and stopped by the script if not running)
bench-slurm: setup
	$(BIN)/python bench/bench_slurm.py

dev: setup
	mkdir -p "$(DAGSTER_HOME)"
	$(BIN)/dagster dev -w workspace.yaml

clean:
	rm -rf .further .dagster_home .slurm .pytest_cache
