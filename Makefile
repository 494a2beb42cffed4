# Two commands on a fresh machine (see README):  make demo  |  make test
PYTHON ?= python3
VENV ?= .venv
CORES ?= 2
BIN := $(abspath $(VENV))/bin
# rules call the `miqd` command: put the environment's bin first, as activating it would
export PATH := $(BIN):$(PATH)
export HF_HUB_OFFLINE := 1

.PHONY: setup demo test lint dryrun bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

demo: setup
	$(BIN)/snakemake --cores $(CORES) --profile profiles/local

test: setup
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/snakemake --lint

dryrun: setup
	$(BIN)/python benchmarks/dryrun.py

bench: setup
	$(BIN)/python benchmarks/distort.py

clean:
	rm -rf results .snakemake
