"""Shared fixtures: the embedded demo photos, materialised once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "resources" / "demo"


@pytest.fixture(scope="session")
def demo_dirs(tmp_path_factory) -> dict[str, Path]:
    from miqd.sources import materialize_demo

    root = tmp_path_factory.mktemp("demo_sources")
    out = {}
    for dataset in ("imagenet", "coco"):
        materialize_demo(DEMO / dataset / "sources.yaml", root / dataset)
        out[dataset] = root / dataset
    return out


@pytest.fixture(scope="session")
def demo_images(demo_dirs) -> dict[str, np.ndarray]:
    """Every demo photo (both sets) by file stem, RGB uint8."""
    from miqd.io import read_image

    return {p.stem: read_image(p) for d in demo_dirs.values() for p in sorted(d.glob("*.png"))}


@pytest.fixture(scope="session")
def small_image(demo_images) -> np.ndarray:
    """A 96x128 crop of a real photo: fast, and has texture, edges and flat areas."""
    return demo_images["demo_val_00000002"][100:196, 150:278].copy()


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> Path:
    """The embedded demo run once locally (default config, 2 cores); its output folder."""
    from helpers import demo_config, snakemake

    outdir = tmp_path_factory.mktemp("demo_run") / "out"
    proc = snakemake("--cores", "2", "--configfile", str(demo_config(outdir)), timeout=1800)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return outdir
