"""The distort stage: 250 region-weighted distortions per source image, for one shard.

Per source: 10 corruptions x 5 whole-image levels (under MIQD-2.5M's recipe each of a corruption's
12 candidates is one call, ranked by PSNR; under ImageNet-C's constants 5 calls), then for each
corruption the 25 (ROI level, background level) pairs: the 5 uniform ones are the level images
themselves, the 20 mixed ones are soft-mask blends of two level images (no corruption calls of
their own).

Outputs, all written atomically: the PNGs in the published layout, a copy of the source under
`src_images/`, a manifest (one row per distorted image; `roi_severity` / `bg_severity` are the
numbers of the candidates the two levels came from) and a levels table (one row per candidate,
with its parameters, PSNR, rank and the level it became). All inputs are checked before
anything is written; if the job fails later, what it wrote is removed.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pyarrow as pa

from miqd import layout
from miqd.distort import seal
from miqd.distort.blend import BlendSettings, blend, soft_mask
from miqd.distort.corruptions import get_corruption
from miqd.distort.levels import SeverityScheme, Streams, compute_levels
from miqd.errors import InputError
from miqd.io import encode_png, file_sha256, read_image, read_mask, read_table, write_bytes, write_table
from miqd.fidelity import SSIMReference, psnr
from miqd.workers import die_with_parent

log = logging.getLogger("miqd.distort")

MANIFEST_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("corruption", pa.string()),
        ("category", pa.string()),
        ("roi_level", pa.int8()),
        ("bg_level", pa.int8()),
        ("region_type", pa.string()),
        ("roi_severity", pa.float64()),
        ("bg_severity", pa.float64()),
        ("path", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("psnr", pa.float64()),
        ("ssim", pa.float64()),
        ("sha256", pa.string()),  # of the PNG file's bytes: binds predictions to this exact image
    ]
)

LEVELS_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("corruption", pa.string()),
        ("candidate", pa.int16()),
        ("params", pa.string()),
        ("psnr", pa.float64()),
        ("rank_psnr", pa.float64()),  # what the rank follows: psnr, or that of upscaled copies (rank_min_side)
        ("rank", pa.int16()),
        ("level", pa.int8()),
    ]
)


LARGE_SOURCE = 4_000_000  # pixels


@dataclass(frozen=True)
class DistortSettings:
    corruptions: tuple[str, ...]
    scheme: SeverityScheme = SeverityScheme()
    blend: BlendSettings = BlendSettings()
    png_encoder: str = "isal"
    png_compression: int = 1
    png_strategy: str = "rle"
    seed: int = 0

    def __post_init__(self):
        for name in self.corruptions:
            try:
                get_corruption(name)
            except InputError as err:
                raise InputError(f"distort.corruptions: {err}") from None

    @classmethod
    def from_config(cls, config: dict) -> DistortSettings:
        d = config["distort"]
        b = d["blend"]
        return cls(
            corruptions=tuple(d["corruptions"]),
            scheme=SeverityScheme(d["severity_scheme"], tuple(d["ranks"]), d["rank_min_side"]),
            blend=BlendSettings(
                b["kernel"], b["erode_kernel"], b["erode_iterations"], b["band"][0], b["band"][1],
                b["smooth_kernel"],
            ),
            png_encoder=d["png_encoder"],
            png_compression=d["png_compression"],
            png_strategy=d["png_strategy"],
            seed=config["seed"],
        )


@dataclass
class Distorted:
    corruption: str
    roi_level: int
    bg_level: int
    roi_severity: float
    bg_severity: float
    image: np.ndarray
    psnr: float | None  # known for uniform levels; computed by the caller otherwise


def distort_image(
    image: np.ndarray, mask: np.ndarray, image_id: str, settings: DistortSettings,
    level_rows: list[dict] | None = None, streams: Streams | None = None,
) -> Iterator[Distorted]:
    """All 25 x len(corruptions) distortions of one image, in manifest order; no I/O.

    `streams` replaces the keyed random streams (see `levels.compute_levels`).
    """
    soft = soft_mask(mask, settings.blend)
    for name in settings.corruptions:
        corruption = get_corruption(name)
        cal = compute_levels(corruption, image, image_id, settings.scheme, settings.seed, streams)
        if level_rows is not None:
            level_rows.extend(cal.rows)
        by_level = {lv.level: lv for lv in cal.levels}
        for roi, bg in layout.PAIRS:
            r, b = by_level[roi], by_level[bg]
            if roi == bg:
                yield Distorted(name, roi, bg, r.candidate, b.candidate, r.image, r.psnr)
            else:
                yield Distorted(name, roi, bg, r.candidate, b.candidate, blend(r.image, b.image, soft), None)


@dataclass(frozen=True)
class SourceJob:
    dataset: str
    image_id: str
    image_path: str
    mask_path: str
    outdir: str
    settings: DistortSettings


def expected_outputs(job: SourceJob) -> list[Path]:
    out = Path(job.outdir)
    paths = [
        out / layout.distorted_relpath(job.dataset, job.image_id, c, r, b)
        for c in job.settings.corruptions
        for r, b in layout.PAIRS
    ]
    suffix = Path(job.image_path).suffix
    paths.append(out / layout.source_copy_relpath(job.dataset, job.image_id, suffix))
    alias = layout.source_alias_relpath(job.dataset, job.image_id, suffix)
    if alias:
        paths.append(out / alias)
    return paths


def _remove_stale_temporaries(job: SourceJob) -> None:
    """Temporary files a killed earlier run left in this source's own image folder."""
    folder = (Path(job.outdir) / layout.distorted_relpath(job.dataset, job.image_id, "x", 1, 1)).parent
    if folder.is_dir():
        for tmp in folder.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)


def process_source(job: SourceJob) -> tuple[list[dict], list[dict]]:
    """Distort one source, write its PNGs, return its manifest and levels rows."""
    _remove_stale_temporaries(job)
    image = read_image(job.image_path)
    mask = read_mask(job.mask_path, image.shape[:2])
    height, width = image.shape[:2]
    ssim_ref = SSIMReference(image)
    outdir = Path(job.outdir)
    large = height * width > LARGE_SOURCE  # progress within the source, corruption by corruption
    start = time.perf_counter()
    rows: list[dict] = []
    level_rows: list[dict] = []
    categories = {}
    for d in distort_image(image, mask, job.image_id, job.settings, level_rows):
        rel = layout.distorted_relpath(job.dataset, job.image_id, d.corruption, d.roi_level, d.bg_level)
        png = encode_png(d.image, job.settings.png_encoder, job.settings.png_compression,
                         job.settings.png_strategy)
        write_bytes(outdir / rel, png)
        if large and d.roi_level == d.bg_level == 5:
            log.info("%s: %s done (%.0f s)", job.image_id, d.corruption, time.perf_counter() - start)
        if d.corruption not in categories:
            categories[d.corruption] = get_corruption(d.corruption).category
        rows.append(
            {
                "image_id": job.image_id,
                "corruption": d.corruption,
                "category": categories[d.corruption],
                "roi_level": d.roi_level,
                "bg_level": d.bg_level,
                "region_type": layout.region_type(d.roi_level, d.bg_level),
                "roi_severity": d.roi_severity,
                "bg_severity": d.bg_severity,
                "path": rel,
                "width": width,
                "height": height,
                "psnr": d.psnr if d.psnr is not None else psnr(image, d.image),
                "ssim": ssim_ref(d.image),
                "sha256": file_sha256(png),
            }
        )
    suffix = Path(job.image_path).suffix
    copy = outdir / layout.source_copy_relpath(job.dataset, job.image_id, suffix)
    copy.parent.mkdir(parents=True, exist_ok=True)
    tmp = copy.with_name(f".{copy.name}.tmp")
    shutil.copyfile(job.image_path, tmp)
    tmp.replace(copy)
    alias = layout.source_alias_relpath(job.dataset, job.image_id, suffix)
    if alias:
        link = outdir / alias
        tmp = link.with_name(f".{link.name}.tmp")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(copy.name)
        tmp.replace(link)
    return rows, level_rows


def _init_worker(parent_pid: int) -> None:
    die_with_parent(parent_pid)
    cv2.setNumThreads(1)


def _validate(jobs: list[SourceJob]) -> None:
    """Decode every source and its mask before anything is written."""
    for job in jobs:
        image = read_image(job.image_path)
        read_mask(job.mask_path, image.shape[:2])


def source_jobs(select_path: str, roi_path: str, dataset: str, outdir: str,
                settings: DistortSettings) -> list[SourceJob]:
    sources = read_table(select_path)
    sources = sources[sources["selected"]].sort_values("image_id", kind="stable")
    masks = read_table(roi_path).set_index("image_id")["mask_path"]
    jobs = []
    for row in sources.itertuples():
        if row.image_id not in masks.index:
            raise InputError(
                f"source {row.image_id} has no ROI mask in {roi_path}; rerun the roi stage"
            )
        jobs.append(SourceJob(dataset, row.image_id, row.path, masks[row.image_id], outdir, settings))
    return jobs


def run(
    select_path: str,
    roi_path: str,
    manifest_path: str,
    levels_path: str,
    dataset: str,
    outdir: str,
    settings: DistortSettings,
    workers: int = 1,
    seal_path: str | None = None,
) -> pd.DataFrame:
    """The shard's PNGs, manifest and levels, then (last) its seal, which vouches for the PNGs."""
    tables = [t for t in (seal_path, levels_path, manifest_path) if t]
    if seal_path:
        Path(seal_path).unlink(missing_ok=True)
    jobs = source_jobs(select_path, roi_path, dataset, outdir, settings)
    _validate(jobs)
    n = len(jobs)
    per_source = len(settings.corruptions) * len(layout.PAIRS)
    log.info("distort %s: %d sources x %d images (%s scheme, %d workers)",
             Path(manifest_path).stem, n, per_source, settings.scheme.name, workers)
    rows: list[dict] = []
    level_rows: list[dict] = []
    start = time.perf_counter()
    try:
        if workers > 1 and n > 1:
            with ProcessPoolExecutor(workers, mp_context=get_context("spawn"),
                                     initializer=_init_worker, initargs=(os.getpid(),)) as pool:
                results = pool.map(process_source, jobs)
                for i, (job, (r, lv)) in enumerate(zip(jobs, results, strict=True), start=1):
                    rows += r
                    level_rows += lv
                    _progress(i, n, job.image_id, per_source, start)
        else:
            for i, job in enumerate(jobs, start=1):
                r, lv = process_source(job)
                rows += r
                level_rows += lv
                _progress(i, n, job.image_id, per_source, start)
        write_table(levels_path, pa.Table.from_pylist(level_rows, schema=LEVELS_SCHEMA))
        table = pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)
        write_table(manifest_path, table)
        if seal_path:
            seal.write(seal_path, outdir, [p for job in jobs for p in expected_outputs(job)])
    except BaseException:
        _remove_outputs(jobs, tables)
        raise
    return table.to_pandas()


def _progress(i: int, n: int, image_id: str, per_source: int, start: float) -> None:
    elapsed = time.perf_counter() - start
    rate = i * per_source / elapsed if elapsed > 0 else float("inf")
    eta = (n - i) * elapsed / i
    log.info("[%d/%d] %s done; %.1f images/s, elapsed %.0fs, ETA %.0fs",
             i, n, image_id, rate, elapsed, eta)


def _remove_outputs(jobs: list[SourceJob], tables: list[str]) -> None:
    for job in jobs:
        _remove_stale_temporaries(job)
        for p in expected_outputs(job):
            p.unlink(missing_ok=True)
    for t in tables:
        Path(t).unlink(missing_ok=True)


def merge_manifests(paths: list[str], out_path: str) -> pd.DataFrame:
    """One table for the dataset: shards concatenated, stably sorted by image id.

    Rows of one image are contiguous and in manifest order within their shard, so the result is
    the same whatever the sharding.
    """
    frames = [read_table(p) for p in paths]
    if not frames:
        raise InputError("no shard manifests to merge")
    merged = pd.concat(frames, ignore_index=True).sort_values("image_id", kind="stable")
    write_table(out_path, pa.Table.from_pandas(merged, schema=MANIFEST_SCHEMA, preserve_index=False))
    return merged
