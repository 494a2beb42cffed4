"""The roi stage: one binary ROI mask per selected source, pixel-aligned with it, plus statistics.

Methods (config `roi.<dataset>.method`, always explicit):
- `coco_gt`: the union of every instance mask (polygons or RLE, crowd regions included) that a
  COCO-format json gives the image, rasterised with pycocotools' primitives. For COCO this is the
  ground truth; the embedded demo's hand-drawn polygons are stored in the same format.
- `files`: existing `<image id>.png` masks in a folder (any non-zero pixel is ROI).

The table records each mask's ROI fraction and number of connected components; a mask that is
empty or covers the whole image is flagged (and logged), because then the ROI-dominated and
background-dominated images equal uniform ones.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pyarrow as pa
from pycocotools import mask as mask_utils

from miqd import layout, sources
from miqd.io import InputError, read_mask, read_table, write_mask_png, write_table

log = logging.getLogger("miqd.roi")

ROI_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("mask_path", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("roi_fraction", pa.float64()),
        ("n_components", pa.int32()),
        ("flag", pa.string()),
    ]
)


def instances_mask(anns: list[dict], height: int, width: int) -> np.ndarray:
    """Union of COCO instance segmentations (polygon lists, compressed or uncompressed RLE)."""
    rles = []
    for ann in anns:
        seg = ann["segmentation"]
        if isinstance(seg, list):  # polygons
            if seg:
                rles.extend(mask_utils.frPyObjects(seg, height, width))
        elif isinstance(seg.get("counts"), list):  # uncompressed RLE
            rles.append(mask_utils.frPyObjects(seg, height, width))
        else:
            rles.append(seg)
    if not rles:
        return np.zeros((height, width), dtype=bool)
    return mask_utils.decode(mask_utils.merge(rles)).astype(bool)


def mask_stats(mask: np.ndarray) -> tuple[float, int, str]:
    fraction = float(mask.mean()) if mask.size else 0.0
    n_components = int(cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)[0] - 1)
    flag = "empty" if fraction == 0 else "full" if fraction == 1 else "ok"
    return fraction, n_components, flag


def _coco_gt(row, cfg: dict, dataset: str, outdir: str) -> tuple[str, np.ndarray]:
    by_name, anns_by_image = _coco_index(cfg["annotations"])
    name = Path(row.path).name
    if name not in by_name:
        raise InputError(
            f"{cfg['annotations']} has no image with file_name {name!r} (source {row.image_id}); "
            f"roi.{dataset}.annotations must describe the selected images"
        )
    image = by_name[name]
    if (int(image["width"]), int(image["height"])) != (row.width, row.height):
        raise InputError(
            f"{cfg['annotations']} says {name} is {image['width']}x{image['height']} but the file "
            f"{row.path} is {row.width}x{row.height}; the annotations do not match the image"
        )
    mask = instances_mask(anns_by_image.get(image["id"], []), row.height, row.width)
    path = layout.roi_mask(outdir, dataset, row.image_id)
    write_mask_png(path, mask)
    return path, mask


@functools.lru_cache(maxsize=4)
def _coco_index(annotations: str) -> tuple[dict, dict]:
    """(image entry by file name, annotations by image id) of a COCO json."""
    data = sources.read_coco(annotations)
    anns: dict = {}
    for ann in data["annotations"]:
        anns.setdefault(ann["image_id"], []).append(ann)
    return {im["file_name"]: im for im in data["images"]}, anns


def _files(row, cfg: dict, dataset: str, outdir: str) -> tuple[str, np.ndarray]:
    path = str(Path(cfg["dir"]) / f"{row.image_id}.png")
    return path, read_mask(path, (row.height, row.width))


METHODS: dict[str, Callable] = {"coco_gt": _coco_gt, "files": _files}


def run(config: dict, dataset: str, select_path: str, out_path: str) -> pd.DataFrame:
    if dataset not in config["roi"]:
        raise InputError(f"config has no roi.{dataset}; the ROI method must be explicit")
    cfg = config["roi"][dataset]
    selected = read_table(select_path)
    selected = selected[selected["selected"]].sort_values("image_id", kind="stable")
    method = METHODS[cfg["method"]]
    rows = []
    for row in selected.itertuples():
        path, mask = method(row, cfg, dataset, config["outdir"])
        fraction, n_components, flag = mask_stats(mask)
        if flag != "ok":
            log.warning("ROI mask of %s is %s (%s): its ROI-DD and BG-DD images equal UD ones",
                        row.image_id, flag, path)
        rows.append(
            {
                "image_id": row.image_id,
                "mask_path": path,
                "width": row.width,
                "height": row.height,
                "roi_fraction": fraction,
                "n_components": n_components,
                "flag": flag,
            }
        )
    table = pa.Table.from_pylist(rows, schema=ROI_SCHEMA)
    write_table(out_path, table)
    log.info("roi %s: %d masks (method %s), %d flagged", dataset, len(rows), cfg["method"],
             sum(r["flag"] != "ok" for r in rows))
    return table.to_pandas()
