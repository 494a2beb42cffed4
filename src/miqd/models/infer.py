"""The infer stage: every model of one (task, GPU group) on every image of one shard.

Each image (the original and its 250 distortions) is decoded once per batch, by DataLoader
workers, and fed to every model of the group that still needs it. A prediction row is bound to
the exact image it came from: its `sha256` is the hash of the file's bytes as the worker read them
(and must equal the distort manifest's, else the file changed since it was written), and the
file's run fingerprint covers the model, the device, the precision and the memory layout.

Each model runs the decoded batch in forward passes of its own batch size (registry `batch_size`,
default `infer.batch_size`). A CUDA out-of-memory does not fail the job: the pass is retried in
halves down to one image, the model keeps the size that worked for the rest of the job, and that
size is logged and recorded in the prediction file's metadata (`miqd.run`).

A job therefore computes exactly what is missing: for each model, the images whose (key, hash)
has no row made with the current run fingerprint, in its finished file or in the chunk files a
killed job left. Everything else is reused, and rows of images the shard no longer holds are
dropped. New rows are saved in chunks (a killed job resumes after the last one) and each model's
file is rewritten atomically, in the shard's image order.

The job's declared output is an index of the group's prediction files; downstream stages read
predictions through it.
"""

from __future__ import annotations

import functools
import io
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from miqd import layout
from miqd.devices import resolve_device
from miqd.errors import InputError
from miqd.io import decode_image, file_sha256, read_table, write_table
from miqd.models import predictions as P
from miqd.models.backends import create_predictor
from miqd.models.registry import ModelSpec
from miqd.workers import die_with_parent

log = logging.getLogger("miqd.infer")

INDEX_SCHEMA = pa.schema([("model", pa.string()), ("fingerprint", pa.string()), ("weights", pa.string()),
                          ("path", pa.string()), ("rows", pa.int64())])


@dataclass(frozen=True)
class InferSettings:
    device: str = "cpu"
    precision: str = "fp32"
    channels_last: bool = False
    batch_size: int = 16
    workers: int = 2
    chunk_size: int = 256
    threads: int = 2

    @classmethod
    def from_config(cls, config: dict, workers: int | None = None, threads: int | None = None) -> InferSettings:
        c = config["infer"]
        return cls(resolve_device(c["device"], "infer.device"), c["precision"], c["channels_last"], c["batch_size"],
                   c["workers"] if workers is None else workers, c["chunk_size"],
                   c["threads"] if threads is None else threads)

    def fingerprint(self, spec: ModelSpec) -> str:
        return P.run_fingerprint(spec, self.device, self.precision, self.channels_last)

    def how(self, spec: ModelSpec, batch_size: int | None = None) -> dict:
        how = {"device": self.device, "precision": self.precision, "channels_last": self.channels_last}
        return how | ({"batch_size": batch_size} if batch_size else {})

    def model_batch(self, spec: ModelSpec) -> int:
        return spec.batch_size or self.batch_size


def shard_images(select_path: str, manifest_path: str, outdir: str) -> pd.DataFrame:
    """Every image of the shard, each selected source then its distortions in manifest order, with
    the hash its predictions must carry (the manifest's for distortions, the file's for sources)."""
    sources = read_table(select_path)
    sources = sources[sources["selected"]].sort_values("image_id", kind="stable")
    manifest = read_table(manifest_path)
    if "sha256" not in manifest.columns:
        raise InputError(f"{manifest_path} has no content hashes (written by an older miqd); rerun its distort job")
    by_image = {k: g for k, g in manifest.groupby("image_id", sort=False)}
    frames = []
    for row in sources.itertuples():
        frames.append(pd.DataFrame({"image_id": [row.image_id], "corruption": ["original"], "roi_level": [0],
                                    "bg_level": [0], "file": [row.path], "sha256": [_source_hash(row.path)]}))
        if row.image_id in by_image:
            m = by_image[row.image_id]
            frames.append(pd.DataFrame({
                "image_id": m["image_id"].to_numpy(), "corruption": m["corruption"].to_numpy(),
                "roi_level": m["roi_level"].to_numpy(), "bg_level": m["bg_level"].to_numpy(),
                "file": [str(Path(outdir) / p) for p in m["path"]], "sha256": m["sha256"].to_numpy(),
            }))
    cols = ["image_id", "corruption", "roi_level", "bg_level", "file", "sha256"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols)


def _source_hash(path: str) -> str:
    try:
        return file_sha256(Path(path).read_bytes())
    except FileNotFoundError:
        raise InputError(f"source image {path} does not exist; rerun the select stage or restore it") from None


class ImageFiles:
    """A map-style dataset of decoded RGB images (torch's DataLoader runs it in workers); each
    file's bytes are checked against the hash the shard expects before they are decoded."""

    def __init__(self, files: list[str], hashes: list[str]):
        self.files, self.hashes = files, hashes

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[int, np.ndarray]:
        path = self.files[index]
        try:
            data = Path(path).read_bytes()
        except FileNotFoundError:
            raise InputError(f"image {path} does not exist; rerun the distort job of its shard") from None
        if file_sha256(data) != self.hashes[index]:
            raise InputError(f"image {path} changed since the distort stage wrote it (its content hash is not the "
                             f"manifest's): rerun the distort job of its shard")
        return index, decode_image(io.BytesIO(data), path)


def _collate(batch):
    return batch


def _worker_init(parent_pid: int, _worker_id: int) -> None:
    die_with_parent(parent_pid)


def _rows(task: str, keys: pd.DataFrame, preds: list[dict], images: list[np.ndarray]) -> dict[str, list]:
    cols: dict[str, list] = {name: keys[name].tolist() for name in P.KEYS + ["sha256"]}
    if task == "cls":
        cols["top5_ids"] = [p["top5_ids"].tolist() for p in preds]
        cols["top5_probs"] = [p["top5_probs"].tolist() for p in preds]
        return cols
    cols["boxes_xyxy"] = [p["boxes_xyxy"].tolist() for p in preds]
    cols["scores"] = [p["scores"].tolist() for p in preds]
    cols["labels"] = [p["labels"].tolist() for p in preds]
    if task == "ins":
        cols["masks_rle"] = [p["masks_rle"] for p in preds]
        cols["height"] = [img.shape[0] for img in images]
        cols["width"] = [img.shape[1] for img in images]
    return cols


def _reusable(paths: list[Path], fingerprint: str) -> list[tuple[Path, pa.Table]]:
    """(path, table) of the files among `paths` made with `fingerprint` (others are ignored)."""
    tables = []
    for path in paths:
        try:
            if path.is_file() and P.fingerprint_of(pq.read_schema(path)) == fingerprint:
                table = pq.read_table(path)
                if "sha256" in table.column_names:
                    tables.append((path, table))
        except (OSError, pa.ArrowInvalid):
            continue
    return tables


@dataclass
class ModelWork:
    """What one model of the group has and needs on this shard."""

    spec: ModelSpec
    fingerprint: str
    output: Path
    partial: Path
    known: list[pa.Table]  # reusable tables
    where: dict[tuple, tuple[int, int]]  # (key, hash) -> (table, row)
    needed: np.ndarray  # bool per shard image: no current row yet
    batch: int = 1  # images per forward pass; halved on out-of-memory

    def chunk_path(self, number: int) -> Path:
        return self.partial / f"chunk-{number:05d}.parquet"


def _plan(task: str, spec: ModelSpec, images: pd.DataFrame, output: Path, settings: InferSettings) -> ModelWork:
    fp = settings.fingerprint(spec)
    partial = output.parent / f".partial-{output.stem}"
    known = [table for _, table in _reusable([output] + sorted(partial.glob("chunk-*.parquet")), fp)]
    where = {}
    for t, table in enumerate(known):
        for r, key in enumerate(P.keys_and_hashes(table)):
            where.setdefault(key, (t, r))
    wanted = list(zip(images.image_id, images.corruption, images.roi_level.astype(int), images.bg_level.astype(int),
                      images.sha256, strict=True))
    needed = np.array([k not in where for k in wanted], bool)
    return ModelWork(spec, fp, output, partial, known, where, needed, settings.model_batch(spec))


def run(task: str, shard: str, specs: list[ModelSpec], select_path: str, manifest_path: str,
        index_path: str, outdir: str, settings: InferSettings) -> pd.DataFrame:
    import torch

    torch.set_num_threads(settings.threads)
    images = shard_images(select_path, manifest_path, outdir)
    n = len(images)
    work = [_plan(task, s, images, Path(layout.predictions(outdir, task, s.id, shard)), settings) for s in specs]
    for s in specs:
        if s.random_weights:
            log.warning("model %s has random weights (weights: random): its predictions, and any "
                        "label computed from them, are NOT real", s.id)
    log.info("infer %s shard %s: %d images, models %s, device %s", task, shard, n,
             ", ".join(s.id for s in specs), settings.device)
    for w in work:
        k = int(w.needed.sum())
        log.info("  %s: %d of %d images to predict (%d rows reused, made from these exact images with "
                 "the same model and settings)", w.spec.id, k, n, n - k)
    todo = [w for w in work if w.needed.any()]
    if todo:
        predictors = {w.spec.id: create_predictor(w.spec, settings.device, settings.precision, settings.channels_last)
                      for w in todo}  # every model loads before any image is read
        _predict(task, images, todo, predictors, settings)
    for w in work:
        _finish(task, w, images, settings)

    index = pa.Table.from_pylist([
        {"model": w.spec.id, "fingerprint": w.fingerprint, "weights": "random" if w.spec.random_weights else "real",
         "path": str(w.output), "rows": n} for w in work], schema=INDEX_SCHEMA)
    write_table(index_path, index)
    return index.to_pandas()


def _predict(task: str, images: pd.DataFrame, work: list[ModelWork], predictors: dict, settings) -> None:
    """Predict the images some model needs, in chunks of at most chunk_size images; one chunk file
    per model and chunk, numbered after the chunks an earlier run left."""
    from torch.utils.data import DataLoader

    union = np.flatnonzero(np.logical_or.reduce([w.needed for w in work]))
    decode = max([settings.batch_size] + [w.batch for w in work])  # every model gets its full batch
    size = max(settings.chunk_size, decode)
    chunks = [union[i:i + size] for i in range(0, len(union), size)]
    first = {w.spec.id: 1 + max([int(p.stem.split("-")[1]) for p in w.partial.glob("chunk-*.parquet")] + [-1])
             for w in work}
    batches = [(c, chunk[b:b + decode].tolist()) for c, chunk in enumerate(chunks)
               for b in range(0, len(chunk), decode)]
    loader = DataLoader(ImageFiles(images["file"].tolist(), images["sha256"].tolist()),
                        batch_sampler=[b for _, b in batches], num_workers=settings.workers,
                        collate_fn=_collate,
                        worker_init_fn=functools.partial(_worker_init, os.getpid()) if settings.workers else None)
    pending: dict[str, list[dict]] = {w.spec.id: [] for w in work}
    seconds = {w.spec.id: 0.0 for w in work}
    start, processed = time.perf_counter(), 0
    for (c, _), batch in zip(batches, loader, strict=True):
        for w in work:
            mine = [(i, img) for i, img in batch if w.needed[i]]
            if not mine:
                continue
            t = time.perf_counter()
            preds, w.batch = predict_in_batches(predictors[w.spec.id], [img for _, img in mine], w.batch,
                                                w.spec.id, settings.device)
            seconds[w.spec.id] += time.perf_counter() - t
            pending[w.spec.id].append(_rows(task, images.iloc[[i for i, _ in mine]], preds, [img for _, img in mine]))
        processed += len(batch)
        if batch[-1][0] == chunks[c][-1]:  # the chunk's last batch
            for w in work:
                if pending[w.spec.id]:
                    parts = pending[w.spec.id]
                    cols = {k: [v for part in parts for v in part[k]] for k in parts[0]}
                    how = settings.how(w.spec, w.batch)
                    table = pa.table(cols, schema=P.schema(task, w.spec, w.fingerprint, how))
                    write_table(w.chunk_path(first[w.spec.id] + c), table)
                    pending[w.spec.id] = []
            elapsed = time.perf_counter() - start
            log.info("chunk %d/%d done: %d of %d images in %.0fs (%.1f images/s); per model s/image: %s",
                     c + 1, len(chunks), processed, len(union), elapsed, processed / elapsed,
                     ", ".join(f"{sid} {seconds[sid] / max(processed, 1):.3f}" for sid in seconds))


def is_out_of_memory(err: BaseException) -> bool:
    """A CUDA (or other accelerator) allocation failure, as torch raises it."""
    import torch

    return isinstance(err, torch.OutOfMemoryError) or (isinstance(err, RuntimeError) and "out of memory" in str(err))


def predict_in_batches(predictor, images: list[np.ndarray], batch: int, model_id: str,
                       device: str) -> tuple[list[dict], int]:
    """Predictions of `images` in forward passes of at most `batch`; a pass that runs out of memory
    is retried in halves down to one image. Returns them and the batch size that worked."""
    import torch

    out: list[dict] = []
    i = 0
    while i < len(images):
        part = images[i:i + batch]
        try:
            out.extend(predictor.predict(part))
        except Exception as err:
            if not is_out_of_memory(err):
                raise
            if batch == 1:
                raise InputError(f"model {model_id!r}: out of memory on {device} with one image per forward "
                                 f"pass; it does not fit this device (a smaller preprocess.size, or a larger "
                                 f"card)") from None
            del err
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            log.warning("model %s: out of memory on %s with %d images per forward pass; retrying with %d "
                        "(kept for the rest of the job)", model_id, device, batch, batch // 2)
            batch //= 2
            continue
        i += len(part)
    return out, batch


def _finish(task: str, w: ModelWork, images: pd.DataFrame, settings: InferSettings) -> None:
    """The model's file: one current row per shard image, in image order, written atomically."""
    found = _reusable([w.output] + sorted(w.partial.glob("chunk-*.parquet")), w.fingerprint)
    tables = [table for _, table in found]
    where: dict[tuple, tuple[int, int]] = {}
    for t, table in enumerate(tables):
        for r, key in enumerate(P.keys_and_hashes(table)):
            where.setdefault(key, (t, r))
    wanted = list(zip(images.image_id, images.corruption, images.roi_level.astype(int), images.bg_level.astype(int),
                      images.sha256, strict=True))
    missing = [k for k in wanted if k not in where]
    if missing:  # pragma: no cover - _predict wrote them
        raise RuntimeError(f"model {w.spec.id}: no prediction for {len(missing)} images after predicting")
    schema = P.schema(task, w.spec, w.fingerprint, settings.how(w.spec, w.batch if w.needed.any() else None))
    if found and found[0][0] == w.output and P.keys_and_hashes(tables[0]) == wanted:
        shutil.rmtree(w.partial, ignore_errors=True)  # the finished file is already exactly current
        return
    rows: dict[int, list[int]] = {}
    positions: dict[int, list[int]] = {}
    for i, key in enumerate(wanted):
        t, r = where[key]
        rows.setdefault(t, []).append(r)
        positions.setdefault(t, []).append(i)
    pieces = [tables[t].take(pa.array(rows[t], pa.int64())).cast(schema) for t in sorted(rows)]
    order = np.argsort(np.concatenate([positions[t] for t in sorted(rows)] or [np.zeros(0, np.int64)]),
                       kind="stable")
    table = pa.concat_tables(pieces).take(pa.array(order, pa.int64())) if pieces else schema.empty_table()
    P.check(table, task, f"predictions of model {w.spec.id!r}")
    write_table(w.output, table.replace_schema_metadata(schema.metadata))
    shutil.rmtree(w.partial, ignore_errors=True)
