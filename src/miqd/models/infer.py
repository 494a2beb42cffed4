"""The infer stage: every model of one (task, GPU group) on every image of one shard.

Each image (the original and its 250 distortions) is decoded once per batch, by DataLoader
workers, and fed to every model of the group that still needs it. Work is saved in chunks of
images per model (a killed job resumes at the first missing chunk) and finished as one Parquet
file per (model, shard), written atomically. A model whose file already holds its current
fingerprint is not run again, so adding a model to a group computes only that model.

The job's declared output is an index of the group's prediction files; downstream stages read
predictions through it.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from miqd import __version__, layout
from miqd.devices import resolve_device
from miqd.io import InputError, read_image, read_table, write_table
from miqd.models.backends import create_predictor
from miqd.models.registry import ModelSpec

log = logging.getLogger("miqd.infer")

KEY_FIELDS = [
    ("image_id", pa.string()),
    ("corruption", pa.string()),  # "original" for the undistorted source
    ("roi_level", pa.int8()),  # 0 for the original
    ("bg_level", pa.int8()),
]
PREDICTION_FIELDS = {
    "cls": [("top5_ids", pa.list_(pa.int16())), ("top5_probs", pa.list_(pa.float32()))],
    "det": [("boxes_xyxy", pa.list_(pa.list_(pa.float32(), 4))), ("scores", pa.list_(pa.float32())),
            ("labels", pa.list_(pa.int16()))],
}
PREDICTION_FIELDS["ins"] = PREDICTION_FIELDS["det"] + [("masks_rle", pa.list_(pa.string())),
                                                      ("height", pa.int32()), ("width", pa.int32())]
INDEX_SCHEMA = pa.schema([("model", pa.string()), ("fingerprint", pa.string()), ("weights", pa.string()),
                          ("path", pa.string()), ("rows", pa.int64())])


def prediction_schema(task: str, spec: ModelSpec | None = None) -> pa.Schema:
    schema = pa.schema(KEY_FIELDS + PREDICTION_FIELDS[task])
    if spec is None:
        return schema
    return schema.with_metadata({
        "miqd.model": json.dumps(spec.as_dict(), sort_keys=True),
        "miqd.fingerprint": spec.fingerprint,
        "miqd.weights": "random" if spec.random_weights else "real",
        "miqd.version": __version__,
    })


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


def shard_images(select_path: str, manifest_path: str, outdir: str) -> pd.DataFrame:
    """Every image of the shard: each selected source, then its distortions in manifest order."""
    sources = read_table(select_path)
    sources = sources[sources["selected"]].sort_values("image_id", kind="stable")
    manifest = read_table(manifest_path)
    by_image = {k: g for k, g in manifest.groupby("image_id", sort=False)}
    frames = []
    for row in sources.itertuples():
        frames.append(pd.DataFrame({"image_id": [row.image_id], "corruption": ["original"],
                                    "roi_level": [0], "bg_level": [0], "file": [row.path]}))
        if row.image_id in by_image:
            m = by_image[row.image_id]
            frames.append(pd.DataFrame({
                "image_id": m["image_id"].to_numpy(), "corruption": m["corruption"].to_numpy(),
                "roi_level": m["roi_level"].to_numpy(), "bg_level": m["bg_level"].to_numpy(),
                "file": [str(Path(outdir) / p) for p in m["path"]],
            }))
    cols = ["image_id", "corruption", "roi_level", "bg_level", "file"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols)


class ImageFiles:
    """A map-style dataset of decoded RGB images (torch's DataLoader runs it in workers)."""

    def __init__(self, files: list[str]):
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[int, np.ndarray]:
        return index, read_image(self.files[index])


def _collate(batch):
    return batch


def _rows(task: str, keys: pd.DataFrame, preds: list[dict], images: list[np.ndarray]) -> dict[str, list]:
    cols: dict[str, list] = {name: keys[name].tolist() for name, _ in KEY_FIELDS}
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


def _valid(path: Path, spec: ModelSpec, rows: int) -> bool:
    """`path` holds `rows` predictions made by this exact model (same fingerprint)."""
    if not path.is_file():
        return False
    try:
        meta = pq.read_metadata(path)
    except (OSError, pa.ArrowInvalid):
        return False
    fingerprint = (meta.metadata or {}).get(b"miqd.fingerprint", b"").decode()
    return fingerprint == spec.fingerprint and meta.num_rows == rows


def run(task: str, shard: str, specs: list[ModelSpec], select_path: str, manifest_path: str,
        index_path: str, outdir: str, settings: InferSettings) -> pd.DataFrame:
    import torch

    torch.set_num_threads(settings.threads)
    images = shard_images(select_path, manifest_path, outdir)
    n = len(images)
    outputs = {s.id: Path(layout.predictions(outdir, task, s.id, shard)) for s in specs}
    todo = [s for s in specs if not _valid(outputs[s.id], s, n)]
    for s in specs:
        if s.random_weights:
            log.warning("model %s has random weights (weights: random): its predictions, and any "
                        "label computed from them, are NOT real", s.id)
    log.info("infer %s shard %s: %d images, models %s (%d already done), device %s",
             task, shard, n, ", ".join(s.id for s in specs), len(specs) - len(todo), settings.device)
    if todo:
        predictors = {s.id: create_predictor(s, settings.device, settings.precision, settings.channels_last)
                      for s in todo}  # every model loads before any image is read
        _predict(task, images, todo, predictors, outputs, settings)

    index = pa.Table.from_pylist([
        {"model": s.id, "fingerprint": s.fingerprint, "weights": "random" if s.random_weights else "real",
         "path": str(outputs[s.id]), "rows": n} for s in specs], schema=INDEX_SCHEMA)
    write_table(index_path, index)
    return index.to_pandas()


def _predict(task, images, specs, predictors, outputs, settings) -> None:
    from torch.utils.data import DataLoader

    n = len(images)
    size = max(settings.chunk_size, settings.batch_size)
    chunks = [(start, min(start + size, n)) for start in range(0, n, size)]
    partial = {s.id: outputs[s.id].parent / f".partial-{outputs[s.id].stem}" for s in specs}
    chunk_file = {s.id: (lambda c, sid=s.id: partial[sid] / f"chunk-{c:05d}.parquet") for s in specs}
    need = {c: [s for s in specs if not _valid(chunk_file[s.id](c), s, hi - lo)]
            for c, (lo, hi) in enumerate(chunks)}
    batches = [(c, list(range(b, min(b + settings.batch_size, hi))))
               for c, (lo, hi) in enumerate(chunks) if need[c]
               for b in range(lo, hi, settings.batch_size)]
    done_chunks = sum(not need[c] for c in range(len(chunks)))
    if done_chunks:
        log.info("resuming: %d of %d chunks already predicted", done_chunks, len(chunks))
    loader = DataLoader(ImageFiles(images["file"].tolist()), batch_sampler=[b for _, b in batches],
                        num_workers=settings.workers, collate_fn=_collate)
    pending: dict[str, list[dict]] = {s.id: [] for s in specs}
    seconds = {s.id: 0.0 for s in specs}
    start, processed = time.perf_counter(), 0
    for (c, _), batch in zip(batches, loader, strict=True):
        idx = [i for i, _ in batch]
        imgs = [img for _, img in batch]
        keys = images.iloc[idx]
        for spec in need[c]:
            t = time.perf_counter()
            preds = predictors[spec.id].predict(imgs)
            seconds[spec.id] += time.perf_counter() - t
            pending[spec.id].append(_rows(task, keys, preds, imgs))
        processed += len(idx)
        if idx[-1] == chunks[c][1] - 1:  # the chunk's last batch
            for spec in need[c]:
                cols = {k: [v for part in pending[spec.id] for v in part[k]] for k in pending[spec.id][0]}
                write_table(chunk_file[spec.id](c), pa.table(cols, schema=prediction_schema(task, spec)))
                pending[spec.id] = []
            elapsed = time.perf_counter() - start
            log.info("chunk %d/%d done: %d images in %.0fs (%.1f images/s); per model s/image: %s",
                     c + 1, len(chunks), processed, elapsed, processed / elapsed,
                     ", ".join(f"{sid} {seconds[sid] / processed:.3f}" for sid in seconds))
    for spec in specs:
        tables = [pq.read_table(chunk_file[spec.id](c)) for c in range(len(chunks))]
        table = pa.concat_tables(tables) if tables else prediction_schema(task).empty_table()
        write_table(outputs[spec.id], table.cast(prediction_schema(task, spec)))
        shutil.rmtree(partial[spec.id], ignore_errors=True)
