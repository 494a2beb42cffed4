# Two commands on a fresh machine (see README):  make demo  |  make test
PYTHON ?= python3
VENV ?= .venv
CORES ?= 2
BIN := $(abspath $(VENV))/bin
# rules call the `miqd` command: put the environment's bin first, as activating it would
export PATH := $(BIN):$(PATH)
export HF_HUB_OFFLINE := 1

# the optional mmdet extra: mmcv's compiled wheel is cached here, outside the checkout
MMDET_WHEELS ?= $(HOME)/.cache/miqd/wheels

.PHONY: setup mmdet demo test lint dryrun bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(BIN)/python -m pip install --quiet --no-deps pyiqa==0.1.16  # see pyproject.toml
	touch $@

# mmdet 3.3.0 + mmengine + mmcv 2.1.0 with its ops, which PyPI has only as source: the first build
# takes 10+ minutes on 2 cores, later ones (any clone on this machine) reuse the cached wheel
mmdet: $(VENV)/.mmdet

$(VENV)/.mmdet: $(VENV)/.installed scripts/build_mmcv.sh
	scripts/build_mmcv.sh $(BIN)/python $(MMDET_WHEELS)
	touch $@

demo: setup
	$(BIN)/snakemake --cores $(CORES) --profile profiles/local

# MIQD_WITH_MMDET=1 make test: install the mmdet extra first, so its tests run instead of skipping
test: setup $(if $(filter 1,$(MIQD_WITH_MMDET)),mmdet)
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/snakemake --lint

dryrun: setup
	$(BIN)/python benchmarks/dryrun.py

bench: setup
	$(BIN)/python benchmarks/distort.py

clean:
	rm -rf results .snakemake
