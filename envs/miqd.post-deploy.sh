#!/usr/bin/env bash
# Run by Snakemake (--use-conda) once after it creates envs/miqd.yaml's environment, as `make setup`
# does for the .venv: pyiqa without its declared dependencies (they would replace OpenCV with
# opencv-python-headless 5 and pull transformers, tensorboard, ...; the metrics miqd uses need none).
set -euo pipefail
pip install --no-deps pyiqa==0.1.16
