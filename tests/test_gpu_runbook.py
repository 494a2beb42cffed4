"""The GPU run-book (benchmarks/gpu.py) in its CPU form: every step runs and reports its table."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import torch

from helpers import REPO


def test_the_runbook_runs_every_step_on_the_cpu_and_writes_one_file(tmp_path):
    out = tmp_path / "cpu.md"
    proc = subprocess.run([sys.executable, "benchmarks/gpu.py", "--device", "cpu", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    text = out.read_text()
    assert proc.returncode == 0, text + proc.stderr[-3000:]
    steps = re.findall(r"^\| ([a-z][^|]+) \| ok \| \d+ \|$", text, re.M)
    assert steps == ["infer: classification group", "infer: detection group", "train: step rate",
                     "select and roi: throughput", "out-of-memory retry"]
    assert "### cls group `tiny-cls`" in text and "### det group `tiny-det`" in text
    assert text.count("decode-once group vs one model at a time:") == 2
    assert re.search(r"^\| ra_miqa \| [\d.]+ \| [\d.]+ \| [\d.]+ \|$", text, re.M)  # a training step rate
    assert re.search(r"^\| piqe \| cpu \| 2 \| 2 \| [\d.]+ \| [\d.]+ \|$", text, re.M)
    assert re.search(r"^\| 16 \| 4 \| 16 \| [\d.]+ \| - \|$", text, re.M)  # halved 16 -> 8 -> 4, all 16 done


def test_the_cuda_form_says_when_there_is_no_cuda():
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is here: the CUDA form runs")
    proc = subprocess.run([sys.executable, "benchmarks/gpu.py", "--device", "cuda"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "no CUDA device here: run with --device cpu" in proc.stderr
