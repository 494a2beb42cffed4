"""ROI masks: coco_gt against pycocotools' own annToMask; files; statistics and flags."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from conftest import DEMO
from miqd import roi
from miqd.config import validate
from miqd.errors import InputError
from miqd.io import read_mask, write_mask_png, write_table
from miqd.select import SELECT_SCHEMA


def _select_table(path, rows):
    write_table(path, pa.Table.from_pylist(
        [dict(class_index=None, class_name=None, categories=None, score=None, selected=True, **r) for r in rows],
        schema=SELECT_SCHEMA))


def test_coco_gt_masks_equal_the_union_of_ann_to_mask(demo_dirs, tmp_path):
    ann_file = DEMO / "coco" / "instances_demo.json"
    coco = COCO(str(ann_file))
    rows = [dict(image_id=f"{im['id']:012d}", path=str(demo_dirs["coco"] / im["file_name"]),
                 width=im["width"], height=im["height"]) for im in coco.imgs.values()]
    _select_table(tmp_path / "s.parquet", rows)
    cfg = validate({"outdir": str(tmp_path), "roi": {"coco": {"method": "coco_gt",
                                                             "annotations": str(ann_file)}}},
                   whole_workflow=False)
    table = roi.run(cfg, "coco", str(tmp_path / "s.parquet"), str(tmp_path / "r.parquet"))
    for img, row in zip(coco.imgs.values(), table.itertuples()):
        expected = np.zeros((img["height"], img["width"]), bool)
        for ann in coco.imgToAnns[img["id"]]:
            expected |= coco.annToMask(ann).astype(bool)
        got = read_mask(row.mask_path, expected.shape)
        np.testing.assert_array_equal(got, expected)
        assert row.roi_fraction == pytest.approx(expected.mean())
        assert row.flag == "ok"
        assert row.method == "coco_gt" and pd.isna(row.coseg_group) and pd.isna(row.grabcut)


def test_instances_mask_handles_crowd_rle_and_polygons():
    h, w = 40, 50
    box = np.zeros((h, w), np.uint8, order="F")
    box[5:15, 30:45] = 1
    compressed = mask_utils.encode(box)
    uncompressed = {"size": [h, w], "counts": [int(c) for c in
                                               _uncompressed_counts(box)]}
    polygon = [[2.0, 2.0, 12.0, 2.0, 12.0, 20.0, 2.0, 20.0]]
    anns = [{"segmentation": polygon}, {"segmentation": compressed, "iscrowd": 1},
            {"segmentation": uncompressed, "iscrowd": 1}, {"segmentation": []}]
    got = roi.instances_mask(anns, h, w)
    data = {"images": [{"id": 1, "height": h, "width": w}], "categories": [{"id": 1}],
            "annotations": [dict(a, id=i + 1, image_id=1, category_id=1) for i, a in enumerate(anns[:3])]}
    coco = COCO()
    coco.dataset = json.loads(json.dumps(data, default=_rle_json))
    coco.createIndex()
    expected = np.zeros((h, w), bool)
    for ann in coco.dataset["annotations"]:
        expected |= coco.annToMask(ann).astype(bool)
    np.testing.assert_array_equal(got, expected)
    assert got[10, 40] and got[10, 5] and not got[30, 25]


def _uncompressed_counts(mask):
    flat = mask.flatten(order="F")
    counts, current, run = [], 0, 0
    for v in flat:
        if v != current:
            counts.append(run)
            current, run = v, 0
        run += 1
    counts.append(run)
    return counts


def _rle_json(obj):
    if isinstance(obj, bytes):
        return obj.decode()
    raise TypeError(obj)


def test_mask_stats_flag_empty_and_full_masks():
    empty = np.zeros((10, 10), bool)
    full = np.ones((10, 10), bool)
    two = empty.copy()
    two[1:3, 1:3] = True
    two[6:9, 6:9] = True
    assert roi.mask_stats(empty) == (0.0, 0, "empty")
    assert roi.mask_stats(full)[2] == "full"
    assert roi.mask_stats(two) == (pytest.approx(0.13), 2, "ok")


def test_files_method_checks_the_size(tmp_path):
    _select_table(tmp_path / "s.parquet", [dict(image_id="a", path="a.png", width=30, height=20)])
    write_mask_png(tmp_path / "masks" / "a.png", np.ones((20, 31), bool))
    cfg = validate({"outdir": str(tmp_path), "roi": {"imagenet": {"method": "files",
                                                                 "dir": str(tmp_path / "masks")}}},
                   whole_workflow=False)
    with pytest.raises(InputError, match=r"masks/a\.png is 31x20 \(WxH\) but its image is 30x20"):
        roi.run(cfg, "imagenet", str(tmp_path / "s.parquet"), str(tmp_path / "r.parquet"))
    write_mask_png(tmp_path / "masks" / "a.png", np.zeros((20, 30), bool))
    table = roi.run(cfg, "imagenet", str(tmp_path / "s.parquet"), str(tmp_path / "r.parquet"))
    assert table.flag.tolist() == ["empty"]
    assert pd.read_parquet(tmp_path / "r.parquet").mask_path.tolist() == [str(tmp_path / "masks" / "a.png")]


def test_annotations_that_do_not_match_the_image_size_are_an_error(tmp_path):
    _select_table(tmp_path / "s.parquet",
                  [dict(image_id="000000000001", path="x/000000000001.png", width=320, height=180)])
    cfg = validate({"outdir": str(tmp_path), "roi": {"coco": {
        "method": "coco_gt", "annotations": str(DEMO / "coco" / "instances_demo.json")}}},
        whole_workflow=False)
    with pytest.raises(InputError, match=r"says 000000000001\.png is 640x360 but the file .* is 320x180"):
        roi.run(cfg, "coco", str(tmp_path / "s.parquet"), str(tmp_path / "r.parquet"))
