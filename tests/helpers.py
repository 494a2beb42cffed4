"""Small builders for stage inputs, shared by the tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
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
