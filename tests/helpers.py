"""Small builders for stage inputs, shared by the tests."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import yaml
from PIL import Image

from miqd.io import write_mask_png, write_table
from miqd.roi import ROI_SCHEMA
from miqd.select import SELECT_SCHEMA


def write_sources(tmp: Path, images: dict[str, np.ndarray], masks: dict[str, np.ndarray]):
    """Write images + masks and the select/roi tables a distort job reads; return their paths."""
    sel_rows, roi_rows = [], []
    for image_id, image in images.items():
        path = tmp / "src" / f"{image_id}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(path)
        mask_path = tmp / "masks" / f"{image_id}.png"
        write_mask_png(mask_path, masks[image_id])
        h, w = image.shape[:2]
        sel_rows.append(dict(image_id=image_id, path=str(path), width=w, height=h, class_index=1,
                             class_name="x", categories=None, score=None, selected=True))
        roi_rows.append(dict(image_id=image_id, mask_path=str(mask_path), width=w, height=h,
                             roi_fraction=float(masks[image_id].mean()), n_components=1, flag="ok"))
    select_path, roi_path = tmp / "select.parquet", tmp / "roi.parquet"
    write_table(select_path, pa.Table.from_pylist(sel_rows, schema=SELECT_SCHEMA))
    write_table(roi_path, pa.Table.from_pylist(roi_rows, schema=ROI_SCHEMA))
    return str(select_path), str(roi_path)


def box_mask(shape, top, left, bottom, right) -> np.ndarray:
    m = np.zeros(shape, dtype=bool)
    m[top:bottom, left:right] = True
    return m


REPO = Path(__file__).resolve().parents[1]


def snakemake_env(extra: dict | None = None) -> dict:
    """The environment a user runs Snakemake in: the environment's bin (with `miqd`) on PATH."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    env.update(extra or {})
    return env


def snakemake(*args: str, timeout: int = 900, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run Snakemake in the repository, always under a hard timeout."""
    return subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=REPO,
                          env=env or snakemake_env(), capture_output=True, text=True, timeout=timeout)


def job_counts(output: str) -> dict[str, int]:
    """The 'Job stats' table Snakemake prints, as {rule: count}."""
    table = output.split("Job stats:", 1)[1]
    counts = {}
    for line in table.splitlines()[3:]:
        m = re.match(r"^(\S+)\s+(\d+)$", line.strip())
        if not m:
            break
        counts[m[1]] = int(m[2])
    return counts


def demo_config(outdir: Path, **shards: int) -> Path:
    """The demo config with its outputs under `outdir` (and optionally other shard counts)."""
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg["outdir"] = str(outdir)
    for dataset, n in shards.items():
        cfg["sources"][dataset]["shards"] = n
    path = outdir.parent / f"{outdir.name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def published_files(outdir: Path) -> dict[str, bytes]:
    """Every image of the published layout (distortions and source copies), by relative path."""
    return {p.relative_to(outdir).as_posix(): p.read_bytes()
            for folder in ("miqa_cls", "miqa_det") for sub in ("images", "src_images")
            for p in (outdir / folder / sub).rglob("*") if p.is_file()}


def demo_roi_mask(image_id: str) -> np.ndarray:
    """The hand-drawn ROI of a demo ImageNet photo (its polygon in roi_polygons.json), rasterised."""
    from miqd.roi import instances_mask

    coco = json.loads((REPO / "resources" / "demo" / "imagenet" / "roi_polygons.json").read_text())
    entry = next(im for im in coco["images"] if Path(im["file_name"]).stem == image_id)
    anns = [a for a in coco["annotations"] if a["image_id"] == entry["id"]]
    return instances_mask(anns, entry["height"], entry["width"])
