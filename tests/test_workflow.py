"""The Snakemake workflow: lint, dry runs (demo and full scale), and the demo end to end."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from PIL import Image

from conftest import REPO

UPSTREAM = REPO / "resources" / "upstream"


def snakemake(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    """Snakemake as a user runs it: the environment's bin (with `miqd`) first on PATH."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    return subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def job_counts(output: str) -> dict[str, int]:
    table = output.split("Job stats:", 1)[1]
    counts = {}
    for line in table.splitlines()[3:]:
        m = re.match(r"^(\S+)\s+(\d+)$", line.strip())
        if not m:
            break
        counts[m[1]] = int(m[2])
    return counts


def test_lint_is_clean():
    proc = snakemake("--lint")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Lints for" not in proc.stdout + proc.stderr


def test_demo_dry_run_lists_per_shard_jobs(tmp_path):
    proc = snakemake("-n", "--config", f"outdir={tmp_path}")
    assert proc.returncode == 0, proc.stderr
    assert job_counts(proc.stdout) == {
        "all": 1, "demo_sources_coco": 1, "demo_sources_imagenet": 1, "distort": 3,
        "distort_figures": 2, "merge_distort": 2, "roi": 3, "select": 3, "total": 16,
    }


@pytest.fixture(scope="module")
def full_scale_tree(tmp_path_factory) -> Path:
    """Empty stand-in files shaped like ImageNet val and COCO val2017."""
    root = tmp_path_factory.mktemp("standin")
    val = root / "imagenet" / "val"
    val.mkdir(parents=True)
    for i in range(1, 50_001):
        (val / f"ILSVRC2012_val_{i:08d}.JPEG").touch()
    coco = root / "coco" / "val2017"
    coco.mkdir(parents=True)
    ids = list(range(1, 5001))
    images = []
    for i in ids:
        (coco / f"{i:012d}.jpg").touch()
        images.append({"id": i, "file_name": f"{i:012d}.jpg", "width": 640, "height": 480})
    annotated = ids[:4952]  # val2017 has 4,952 annotated images of 5,000
    anns = [{"id": k, "image_id": i, "category_id": 1, "bbox": [0, 0, 1, 1], "area": 1.0,
             "iscrowd": 0, "segmentation": [[0, 0, 1, 0, 1, 1]]} for k, i in enumerate(annotated, 1)]
    (root / "coco" / "annotations").mkdir()
    (root / "coco" / "annotations" / "instances_val2017.json").write_text(
        json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "person"}]}))
    (root / "masks").mkdir()
    return root


def test_full_scale_dry_run_is_per_shard_not_per_image(full_scale_tree, tmp_path):
    cfg = yaml.safe_load((REPO / "config" / "miqd25m.yaml").read_text())
    cfg["outdir"] = str(tmp_path / "out")
    cfg["sources"]["imagenet"]["images"] = str(full_scale_tree / "imagenet" / "val")
    cfg["sources"]["coco"]["images"] = str(full_scale_tree / "coco" / "val2017")
    ann = str(full_scale_tree / "coco" / "annotations" / "instances_val2017.json")
    cfg["sources"]["coco"]["annotations"] = ann
    cfg["roi"]["coco"]["annotations"] = ann
    cfg["roi"]["imagenet"]["dir"] = str(full_scale_tree / "masks")
    path = tmp_path / "full.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = snakemake("-n", "--configfile", str(path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    n_in, n_coco = cfg["sources"]["imagenet"]["shards"], cfg["sources"]["coco"]["shards"]
    counts = job_counts(proc.stdout)
    expected = {"select": n_in + n_coco, "roi": n_in + n_coco, "distort": n_in + n_coco,
                "merge_distort": 2, "distort_figures": 2, "all": 1}
    expected["total"] = sum(expected.values())
    print(f"full-scale DAG: {expected['total']} jobs = 3 x ({n_in} + {n_coco}) shards + 2 + 2 + 1")
    assert counts == expected
    assert "demo_sources" not in proc.stdout  # nothing of the demo config leaks in


def _run_demo(outdir: Path, imagenet_shards: int, coco_shards: int, threads: int):
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg["outdir"] = str(outdir)
    cfg["sources"]["imagenet"]["shards"] = imagenet_shards
    cfg["sources"]["coco"]["shards"] = coco_shards
    cfg["distort"]["threads"] = threads
    path = outdir.parent / f"{outdir.name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    proc = snakemake("--cores", "2", "--configfile", str(path))
    assert proc.returncode == 0, proc.stderr[-4000:]
    return path


def _published_files(outdir: Path) -> dict[str, bytes]:
    return {p.relative_to(outdir).as_posix(): p.read_bytes()
            for folder in ("miqa_cls", "miqa_det") for p in (outdir / folder).rglob("*") if p.is_file()}


@pytest.mark.slow
def test_demo_end_to_end_is_byte_identical_across_sharding_and_workers(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    cfg_a = _run_demo(a, imagenet_shards=1, coco_shards=1, threads=1)
    _run_demo(b, imagenet_shards=4, coco_shards=3, threads=2)

    files_a, files_b = _published_files(a), _published_files(b)
    assert sum(k.endswith(".png") and "/images/" in k for k in files_a) == 9 * 250
    assert files_a.keys() == files_b.keys()
    different = [k for k in files_a if files_a[k] != files_b[k]]
    assert different == []
    for dataset, n_sources in (("imagenet", 6), ("coco", 3)):
        merged = a / "distort" / f"{dataset}.parquet"
        assert merged.read_bytes() == (b / "distort" / f"{dataset}.parquet").read_bytes()
        m = pd.read_parquet(merged)
        assert len(m) == 250 * n_sources and m.image_id.nunique() == n_sources
        with Image.open(a / "distort" / f"{dataset}.examples.png") as sheet:  # 10 rows of thumbnails
            first = Image.open(a / m.path.iloc[0])
            thumb_h = round(first.height * 128 / max(first.size))
            assert sheet.height == 18 + 10 * thumb_h
        with Image.open(a / "distort" / f"{dataset}.quality.png") as fig:
            assert fig.width > 800

    # a second run finds nothing to do: nothing computed is redone or lost
    again = snakemake("-n", "--configfile", str(cfg_a))
    assert again.returncode == 0
    assert "Nothing to be done" in again.stdout + again.stderr
