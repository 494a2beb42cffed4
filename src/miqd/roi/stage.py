"""The roi stage: one binary ROI mask per selected source, pixel-aligned with it, plus statistics.

Methods (config `roi.<dataset>.method`, always explicit; there is no fallback):
- `coco_gt`: the union of every instance mask (polygons or RLE, crowd regions included) that a
  COCO-format json gives the image, rasterised with pycocotools' primitives. For COCO this is the
  ground truth; the embedded demo's hand-drawn polygons are stored in the same format.
- `files`: existing `<image id>.png` masks in a folder (any non-zero pixel is ROI).
- `coseg`: co-segmentation with deep ViT features (Amir et al.; `coseg.py` has the steps,
  `features.py` the ViT) of each group of selected images: the images of an ImageNet class, or
  blocks of `group_size` images in id order for COCO.

The table records each mask's ROI fraction and number of connected components; a mask that is
empty or covers the whole image is flagged (and logged), because then the ROI-dominated and
background-dominated images equal uniform ones. For coseg it also records the group, the number
of clusters the elbow rule chose, and whether GrabCut refined the mask.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pyarrow as pa

from miqd import layout
from miqd.errors import InputError
from miqd.plugins import Registry
from miqd.io import read_image, read_mask, read_table, write_mask_png, write_table
from miqd.roi.coco_gt import coco_index, instances_mask
from miqd.seeding import rng_for, stream_key

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
        ("method", pa.string()),
        ("coseg_group", pa.string()),  # coseg only: the images segmented together
        ("coseg_clusters", pa.int32()),  # coseg only: k chosen by the elbow rule
        ("grabcut", pa.bool_()),  # coseg only: False when GrabCut had no seeds to refine with
    ]
)


def mask_stats(mask: np.ndarray) -> tuple[float, int, str]:
    fraction = float(mask.mean()) if mask.size else 0.0
    n_components = int(cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)[0] - 1)
    flag = "empty" if fraction == 0 else "full" if fraction == 1 else "ok"
    return fraction, n_components, flag


# A method turns the shard's selected rows into (row, mask path, mask, extra columns) per source.
Method = Callable[[pd.DataFrame, dict, str, dict], Iterator[tuple]]


def _coco_gt(rows: pd.DataFrame, cfg: dict, dataset: str, config: dict) -> Iterator[tuple]:
    by_name, anns_by_image = coco_index(cfg["annotations"])
    for row in rows.itertuples():
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
        mask = instances_mask(anns_by_image.get(int(image["id"]), []), row.height, row.width)
        path = layout.roi_mask(config["outdir"], dataset, row.image_id)
        write_mask_png(path, mask)
        yield row, path, mask, {}


def _files(rows: pd.DataFrame, cfg: dict, dataset: str, config: dict) -> Iterator[tuple]:
    for row in rows.itertuples():
        path = str(Path(cfg["dir"]) / f"{row.image_id}.png")
        yield row, path, read_mask(path, (row.height, row.width)), {}


def coseg_groups(rows: pd.DataFrame, how: str, group_size: int) -> list[tuple[str, pd.DataFrame]]:
    """(group id, rows) in a fixed order: per class, or blocks of `group_size` in id order."""
    rows = rows.sort_values("image_id", kind="stable")
    if how == "class":
        return [(f"class-{int(c)}", g) for c, g in rows.groupby("class_index", sort=True)]
    return [(f"block-{rows.image_id.iloc[i]}", rows.iloc[i:i + group_size])
            for i in range(0, len(rows), group_size)]


def _coseg(rows: pd.DataFrame, cfg: dict, dataset: str, config: dict) -> Iterator[tuple]:
    import torch

    from miqd.roi import coseg
    from miqd.roi.features import ViTFeatures
    from miqd.devices import resolve_device

    c = cfg["coseg"]
    key = f"roi.{dataset}.coseg"
    if c["groups"] == "class" and rows["class_index"].isna().any():
        raise InputError(f"{key}.groups is class but the select table has sources without a class")
    device = resolve_device(c["device"], f"{key}.device")
    torch.set_num_threads(cfg["threads"])
    vit = ViTFeatures(c["model"]["arch"], c["model"]["weights"], device, key=f"{key}.model")
    vit.check(c["stride"], c["layer"], c["saliency_heads"])
    params = coseg.CosegParams(c["elbow"], c["max_clusters"], c["sample_interval"], c["kmeans_restarts"],
                               c["kmeans_iterations"], c["saliency_threshold"], c["votes_percentage"])
    groups = coseg_groups(rows, c["groups"], c["group_size"])
    start, done = time.perf_counter(), 0
    for n_group, (group, members) in enumerate(groups, start=1):
        images = [read_image(p) for p in members["path"]]
        for row, im in zip(members.itertuples(), images, strict=True):
            if im.shape[:2] != (row.height, row.width):
                raise InputError(f"image {row.path} is {im.shape[1]}x{im.shape[0]} but the select table "
                                 f"says {row.width}x{row.height}; rerun the select stage")
        feats = vit.extract(images, c["load_size"], c["stride"], c["layer"], c["facet"],
                            c["saliency_heads"], c["saliency_scale"], c["batch_size"])
        result = coseg.cosegment([f.descriptors for f in feats], [f.saliency for f in feats], params,
                                 rng_for(config["seed"], "coseg", group))
        for row, im, f, fg in zip(members.itertuples(), images, feats, result.foreground, strict=True):
            coarse = coseg.grid_to_pixels(fg.reshape(f.grid), im.shape[:2], f.load_hw, vit.patch, c["stride"])
            erode = max(1, round(c["grabcut_erode"] * min(im.shape[:2]) / min(f.load_hw))) | 1
            mask, refined = coseg.grabcut_refine(im, coarse, erode, c["grabcut_iterations"],
                                                 stream_key(config["seed"], "grabcut", row.image_id))
            path = layout.roi_mask(config["outdir"], dataset, row.image_id)
            write_mask_png(path, mask)
            yield row, path, mask, {"coseg_group": group, "coseg_clusters": result.n_clusters,
                                    "grabcut": refined}
        done += len(members)
        log.info("coseg group %s (%d/%d): %d images, k=%d, %d foreground cluster(s); %.2f images/s (%s)",
                 group, n_group, len(groups), len(members), result.n_clusters, len(result.salient),
                 done / max(time.perf_counter() - start, 1e-9), device)


METHODS: Registry[Method] = Registry("ROI method")
METHODS.add("coco_gt", _coco_gt)
METHODS.add("files", _files)
METHODS.add("coseg", _coseg)


def run(config: dict, dataset: str, select_path: str, out_path: str) -> pd.DataFrame:
    if dataset not in config["roi"]:
        raise InputError(f"config has no roi.{dataset}; the ROI method must be explicit")
    cfg = config["roi"][dataset]
    selected = read_table(select_path)
    selected = selected[selected["selected"]].sort_values("image_id", kind="stable")
    rows = []
    written: list[str] = []
    method = METHODS.get(cfg["method"], f"roi.{dataset}.method")
    try:
        for row, path, mask, extra in method(selected, cfg, dataset, config):
            if cfg["method"] != "files":
                written.append(path)
            fraction, n_components, flag = mask_stats(mask)
            if flag != "ok":
                log.warning("ROI mask of %s is %s (%s): its ROI-DD and BG-DD images equal UD ones",
                            row.image_id, flag, path)
            rows.append({"image_id": row.image_id, "mask_path": path, "width": row.width,
                         "height": row.height, "roi_fraction": fraction, "n_components": n_components,
                         "flag": flag, "method": cfg["method"], **extra})
    except BaseException:
        for path in written:  # a failed job leaves no masks behind that no table names
            Path(path).unlink(missing_ok=True)
        raise
    rows.sort(key=lambda r: r["image_id"])
    table = pa.Table.from_pylist(rows, schema=ROI_SCHEMA)
    write_table(out_path, table)
    log.info("roi %s: %d masks (method %s), %d flagged", dataset, len(rows), cfg["method"],
             sum(r["flag"] != "ok" for r in rows))
    return table.to_pandas()
