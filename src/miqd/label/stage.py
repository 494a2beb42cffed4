"""The label stage: per-model scores and MMOS of one (task, shard), from stored predictions only.

Reads the shard's distort manifest (which distorted images exist), the infer indexes of every GPU
group of the task (where each model's predictions are), and the ground truth (the select table's
ImageNet class for cls, the COCO annotations for det/ins). Writes one Parquet table, one row per
distorted image, in manifest order: the manifest's keys and `path`, `psnr`, `ssim`; the three MMOS
labels `consistency`, `accuracy`, `composite`; and every model's `consistency/<id>` and
`accuracy/<id>`. The table's metadata records α, λ and which models had random weights.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from miqd import sources
from miqd.errors import InputError
from miqd.io import file_sha256, read_table, write_table
from miqd.models import predictions
from miqd.label.ap import xyxy_to_xywh
from miqd.label.mmos import mmos, model_weights
from miqd.label.agreement import Objects, clean_reference, cls_accuracy, cls_consistency, detection_scores

log = logging.getLogger("miqd.label")

KEYS = ["image_id", "corruption", "roi_level", "bg_level"]
MANIFEST_COLUMNS = KEYS + ["region_type", "path", "psnr", "ssim", "sha256"]


@dataclass(frozen=True)
class LabelSettings:
    lam: float = 0.5
    weights: str = "benchmark"
    iou_thresholds: tuple[float, ...] = tuple(np.linspace(0.5, 0.95, 10).tolist())
    max_detections: int = 100
    reference_score: float = 0.5
    empty_reference: str = "agreement"

    @classmethod
    def from_config(cls, config: dict) -> LabelSettings:
        c = config["label"]
        return cls(c["lambda"], c["weights"], tuple(c["iou_thresholds"]), c["max_detections"],
                   c["reference_score"], c["empty_reference"])


class Predictions:
    """One model's prediction file, addressable by image key without building per-row objects.

    Rows are checked where they are read (one per image, equal list lengths, finite scores), and a
    row is used only if it was computed from the file the shard holds now (`expected` hashes)."""

    def __init__(self, path: str, task: str, model: str, expected: dict[tuple, str]):
        self.path, self.task, self.model = path, task, model
        self.where = f"predictions of model {model!r} ({path})"
        try:
            table = pq.read_table(path)
        except (OSError, pa.ArrowInvalid) as err:
            raise InputError(f"{self.where} cannot be read: {err}; rerun its infer job") from None
        predictions.check(table, task, self.where)
        self.expected = expected
        keyed = predictions.keys_and_hashes(table)
        self.row = {(k[0], k[1], int(k[2]), int(k[3])): i for i, k in enumerate(keyed)}
        self.sha = [k[4] for k in keyed]
        if task == "cls":
            ids = table.column("top5_ids").combine_chunks()
            self.top1 = ids.values.to_numpy().reshape(-1, 5)[:, 0].astype(np.int64)
            return
        self._scores = _flat(table, "scores")
        self._labels = _flat(table, "labels")
        boxes = table.column("boxes_xyxy").combine_chunks()
        self._box_values = xyxy_to_xywh(boxes.values.values.to_numpy().reshape(-1, 4))
        self._offsets = boxes.offsets.to_numpy()
        if task == "ins":
            masks = table.column("masks_rle").combine_chunks()
            self._masks = masks.values.to_pylist()
            self._size = np.stack([table.column("height").to_numpy(), table.column("width").to_numpy()], 1)

    def index(self, key: tuple) -> int:
        if key not in self.row:
            raise InputError(
                f"{self.where} have no row for image {key[0]} {key[1]} ({key[2]}, {key[3]}); the file predates "
                f"the distort manifest: rerun its infer job"
            )
        i = self.row[key]
        if self.sha[i] != self.expected[key]:
            raise InputError(
                f"{self.where}: the row of image {key[0]} {key[1]} ({key[2]}, {key[3]}) was computed from another "
                f"version of that image (content hash {self.sha[i][:12]}, the shard's is {self.expected[key][:12]}); "
                f"rerun its infer job"
            )
        return i

    def objects(self, key: tuple) -> Objects:
        i = self.index(key)
        lo, hi = self._offsets[i], self._offsets[i + 1]
        return Objects(
            boxes_xywh=self._box_values[lo:hi], labels=self._labels[0][lo:hi], scores=self._scores[0][lo:hi],
            masks_rle=self._masks[lo:hi] if self.task == "ins" else None,
            size=tuple(int(v) for v in self._size[i]) if self.task == "ins" else None,
        )


def _flat(table: pa.Table, column: str) -> tuple[np.ndarray, np.ndarray]:
    col = table.column(column).combine_chunks()
    return col.values.to_numpy(zero_copy_only=False), col.offsets.to_numpy()


# ---------------------------------------------------------------------------------------------
# ground truth


def coco_ground_truth(annotations: str, image_ids: list[str], with_masks: bool) -> dict[str, Objects]:
    """COCO annotations of the given images as references (crowd flagged; masks as RLE)."""
    data = sources.read_coco(annotations)
    images = {sources.coco_image_id(int(im["id"])): im for im in data["images"]}
    anns = sources.annotations_by_image(data)
    out = {}
    for image_id in image_ids:
        if image_id not in images:
            raise InputError(f"{annotations} has no image {image_id}; sources.coco.annotations must be the "
                             f"file the sources were selected from")
        im = images[image_id]
        h, w = int(im["height"]), int(im["width"])
        items = anns.get(int(im["id"]), [])
        boxes = np.array([a["bbox"] for a in items], np.float64).reshape(-1, 4)  # COCO's xywh, exactly
        areas = np.array([a.get("area", a["bbox"][2] * a["bbox"][3]) for a in items], np.float64)
        rles = None
        if with_masks:
            rles = [sources.annotation_rle(a["segmentation"], h, w) for a in items]
        out[image_id] = Objects(boxes_xywh=boxes, labels=np.array([a["category_id"] for a in items], np.int64),
                                crowd=np.array([bool(a.get("iscrowd", 0)) for a in items], bool),
                                masks_rle=rles, size=(h, w), areas=areas)
    return out


# ---------------------------------------------------------------------------------------------
# the stage


def run(task: str, models: list[dict], index_paths: list[str], manifest_path: str, select_path: str,
        annotations: str | None, out_path: str, settings: LabelSettings) -> pd.DataFrame:
    """Score every model of `models` ({id, benchmark}) on the shard and write the label table."""
    manifest = read_table(manifest_path)[MANIFEST_COLUMNS].reset_index(drop=True)
    files = _prediction_files(index_paths, [m["id"] for m in models], task)
    selected = read_table(select_path)
    selected = selected[selected["selected"]]
    rows_of = {k: g.index.to_numpy() for k, g in manifest.groupby("image_id", sort=False)}
    missing = sorted(set(rows_of) - set(selected["image_id"]))
    if missing:
        raise InputError(f"{manifest_path} has distortions of {missing[:3]}, which {select_path} does not select")
    if task == "cls":
        truth = dict(zip(selected["image_id"], selected["class_index"].astype(int), strict=True))
    else:
        if not annotations:
            raise InputError(f"task {task} needs the COCO annotations (sources.coco.annotations)")
        truth = coco_ground_truth(annotations, list(rows_of), with_masks=task == "ins")

    n, m = len(manifest), len(models)
    consistency, accuracy = np.full((n, m), np.nan), np.full((n, m), np.nan)
    keys = list(zip(manifest.image_id, manifest.corruption, manifest.roi_level.astype(int),
                    manifest.bg_level.astype(int), strict=True))
    expected = dict(zip(keys, manifest["sha256"], strict=True))
    paths = dict(zip(selected["image_id"], selected["path"], strict=True))
    expected.update({(i, "original", 0, 0): file_sha256(_read_source(paths[i])) for i in rows_of})
    start = time.perf_counter()
    for j, model in enumerate(models):
        preds = Predictions(files[model["id"]]["path"], task, model["id"], expected)
        for image_id, rows in rows_of.items():
            clean_key = (image_id, "original", 0, 0)
            if task == "cls":
                top1 = preds.top1[[preds.index(keys[r]) for r in rows]]
                consistency[rows, j] = cls_consistency(top1, preds.top1[preds.index(clean_key)])
                accuracy[rows, j] = cls_accuracy(top1, truth[image_id])
                continue
            distorted = [preds.objects(keys[r]) for r in rows]
            kw = dict(masks=task == "ins", iou_thresholds=settings.iou_thresholds,
                      max_dets=settings.max_detections, reference_score=settings.reference_score,
                      empty_reference=settings.empty_reference)
            consistency[rows, j] = detection_scores(
                distorted, clean_reference(preds.objects(clean_key), settings.reference_score), **kw)
            accuracy[rows, j] = detection_scores(distorted, truth[image_id], **kw)
        elapsed = time.perf_counter() - start
        log.info("[%d/%d] %s scored: %d images, %.0f pairs/s, elapsed %.0fs", j + 1, m, model["id"], n,
                 n * (j + 1) / max(elapsed, 1e-9), elapsed)

    alpha = model_weights({mdl["id"]: mdl["benchmark"] for mdl in models}, settings.weights)
    labels = mmos(consistency, accuracy, list(alpha.values()), settings.lam)
    undefined = int(np.isnan(labels["composite"]).sum())
    if undefined:
        log.warning("%d of %d images have no defined label (no model had a score; label.empty_reference "
                    "is 'exclude'): their MMOS is NaN", undefined, n)
    random = [f["model"] for f in files.values() if f["weights"] == "random"]
    if random:
        log.warning("models %s have random weights: these labels are NOT real", ", ".join(random))

    table = manifest.copy()
    for name, values in labels.items():
        table[name] = values
    for j, model in enumerate(models):
        table[f"consistency/{model['id']}"] = consistency[:, j]
        table[f"accuracy/{model['id']}"] = accuracy[:, j]
    meta = {"miqd.alpha": json.dumps(alpha), "miqd.lambda": json.dumps(settings.lam),
            "miqd.random_models": json.dumps(random), "miqd.task": task}
    arrow = pa.Table.from_pandas(table, preserve_index=False)
    write_table(out_path, arrow.replace_schema_metadata({**(arrow.schema.metadata or {}), **meta}))
    log.info("label %s: %d images x %d models; mean consistency %.3f, accuracy %.3f, composite %.3f",
             task, n, m, *(float(np.nanmean(labels[k])) if n else float("nan")
                           for k in ("consistency", "accuracy", "composite")))
    return table


def _read_source(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise InputError(f"source image {path} does not exist; rerun the select stage or restore it") from None


def _prediction_files(index_paths: list[str], model_ids: list[str], task: str) -> dict[str, dict]:
    """{model: index row} from the infer indexes; every requested model must be there."""
    rows = {}
    for path in index_paths:
        for row in read_table(path).to_dict("records"):
            rows[row["model"]] = row
    absent = [m for m in model_ids if m not in rows]
    if absent:
        raise InputError(f"no predictions of {task} models {absent} in the infer indexes {index_paths}; "
                         f"run their infer jobs (the registry and the infer outputs disagree)")
    return {m: rows[m] for m in model_ids}


def model_alpha(path: str) -> dict[str, float]:
    """α per model as stored in a label table's metadata."""
    meta = pq.read_schema(path).metadata or {}
    return json.loads(meta[b"miqd.alpha"])
