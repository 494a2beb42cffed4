"""The label stage: hand-worked consistency/accuracy per task, MMOS, edge cases, the stage's table."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pycocotools import mask as mask_utils

from miqd import layout
from miqd.errors import InputError
from miqd.io import write_table
from miqd.label import stage
from miqd.label.mmos import mmos, model_weights, weighted_mean
from miqd.label.agreement import Objects, clean_reference, cls_accuracy, cls_consistency, detection_scores
from miqd.io import file_sha256
from miqd.label.ap import xyxy_to_xywh
from miqd.models import predictions
from miqd.models.infer import INDEX_SCHEMA
from miqd.select import SELECT_SCHEMA

# ---------------------------------------------------------------------------------------------
# hand-worked examples


def test_cls_consistency_accuracy_and_mmos_by_hand():
    """3 models (top-1 70/80/90): clean top-1 5, 5, 7; ground truth 5; distorted top-1 5, 6, 7.

    consistency per model 1, 0, 1 -> E_C = (70 + 90) / 240 = 2/3
    accuracy    per model 1, 0, 0 -> E_A = 70 / 240 = 7/24
    composite (lambda 0.5) = (2/3 + 7/24) / 2 = 23/48
    """
    clean, gt, dist = np.array([5, 5, 7]), 5, np.array([5, 6, 7])
    c, a = cls_consistency(dist, clean), cls_accuracy(dist, gt)
    assert c.tolist() == [1, 0, 1] and a.tolist() == [1, 0, 0]
    alpha = model_weights({"m70": 70, "m80": 80, "m90": 90})
    assert list(alpha.values()) == pytest.approx([70 / 240, 80 / 240, 90 / 240])
    labels = mmos(c[None], a[None], list(alpha.values()), 0.5)
    assert labels["consistency"][0] == pytest.approx(2 / 3)
    assert labels["accuracy"][0] == pytest.approx(7 / 24)
    assert labels["composite"][0] == pytest.approx(23 / 48)
    assert model_weights({"a": 1, "b": 3}, "uniform") == {"a": 0.5, "b": 0.5}


# Reference boxes A, B (class 1); the clean prediction also had C below the reference score.
A, B, C = [0, 0, 10, 10], [20, 20, 30, 30], [50, 50, 60, 60]
CROWD = [40, 40, 70, 70]  # a crowd region of the ground truth that covers C
# On x': P3 = C scored highest (no reference object there), P1 = A exactly, P2 = B stretched
# (IoU with B = 100 / 150 = 2/3: a match at tau <= 0.65, not at tau >= 0.7).
DIST = dict(boxes=[C, A, [20, 20, 30, 35]], scores=[0.95, 0.9, 0.8], labels=[1, 1, 1])
# consistency (reference A, B): in score order FP, TP, TP at tau <= 0.65 -> precision envelope 2/3 at
# every recall -> AP 2/3; FP, TP, FP at tau >= 0.7 -> recall reaches 0.5 with envelope 1/2 -> AP
# 0.5 * 51/101 (51 of the 101 recall points are <= 0.5). Mean over the 10 thresholds:
CONSISTENCY = (4 * 2 / 3 + 6 * 0.5 * 51 / 101) / 10
# accuracy (ground truth A, B and the crowd region): P3 lies in the crowd region, so it is ignored:
# TP, TP -> AP 1 at tau <= 0.65; TP, FP -> AP 51/101 at tau >= 0.7.
ACCURACY = (4 * 1 + 6 * 51 / 101) / 10


def _rect_rle(box, h=80, w=80) -> str:
    m = np.zeros((h, w), np.uint8)
    x1, y1, x2, y2 = box
    m[y1:y2, x1:x2] = 1
    return mask_utils.encode(np.asfortranarray(m[:, :, None]))[0]["counts"].decode()


def _objects(boxes, labels, scores=None, crowd=None) -> Objects:
    return Objects(boxes_xywh=xyxy_to_xywh(np.array(boxes, np.float64).reshape(-1, 4)), labels=np.array(labels),
                   scores=None if scores is None else np.array(scores, np.float64),
                   crowd=None if crowd is None else np.array(crowd, bool),
                   masks_rle=[_rect_rle(b) for b in boxes], size=(80, 80))


@pytest.mark.parametrize("masks", [False, True], ids=["det", "ins"])
def test_det_and_ins_consistency_and_accuracy_by_hand(masks):
    clean = _objects([A, B, C], [1, 1, 1], scores=[0.9, 0.8, 0.3])
    reference = clean_reference(clean, 0.5)
    assert reference.boxes_xywh.tolist() == xyxy_to_xywh([A, B]).tolist() and not reference.crowd.any()
    dist = _objects(DIST["boxes"], DIST["labels"], DIST["scores"])
    gt = _objects([A, B, CROWD], [1, 1, 1], crowd=[False, False, True])
    assert detection_scores([dist], reference, masks=masks)[0] == pytest.approx(CONSISTENCY, abs=1e-12)
    assert detection_scores([dist], gt, masks=masks)[0] == pytest.approx(ACCURACY, abs=1e-12)
    # tau = 0.5 only: consistency 2/3, accuracy 1
    assert detection_scores([dist], reference, masks=masks, iou_thresholds=[0.5])[0] == pytest.approx(2 / 3)
    assert detection_scores([dist], gt, masks=masks, iou_thresholds=[0.5])[0] == pytest.approx(1.0)
    # a wrong class matches nothing
    wrong = _objects(DIST["boxes"], [2, 2, 2], DIST["scores"])
    assert detection_scores([wrong], reference, masks=masks)[0] == 0.0


def test_an_empty_reference_follows_the_configured_policy():
    empty = _objects([], [], crowd=[])
    only_crowd = _objects([CROWD], [1], crowd=[True])
    quiet = _objects([A], [1], scores=[0.2])  # nothing at reference_score 0.5
    loud = _objects([A], [1], scores=[0.7])
    for ref in (empty, only_crowd):
        got = detection_scores([quiet, loud, _objects([], [], scores=[])], ref, masks=False)
        assert got.tolist() == [1.0, 0.0, 1.0]  # agreement: nothing before, nothing after
        excluded = detection_scores([quiet, loud], ref, masks=False, empty_reference="exclude")
        assert np.isnan(excluded).all()
    with pytest.raises(InputError, match=r"label.empty_reference: 'skip' is not one of"):
        detection_scores([quiet], empty, masks=False, empty_reference="skip")


def test_no_predictions_against_objects_score_zero():
    gt = _objects([A, B], [1, 1], crowd=[False, False])
    assert detection_scores([_objects([], [], scores=[])], gt, masks=True).tolist() == [0.0]


def test_mmos_renormalises_weights_over_defined_scores():
    scores = np.array([[1.0, 0.0, 0.5], [np.nan, 0.0, 1.0], [np.nan, np.nan, np.nan]])
    alpha = [0.5, 0.3, 0.2]
    got = weighted_mean(scores, alpha)
    assert got[0] == pytest.approx(0.5 + 0.1)
    assert got[1] == pytest.approx(0.2 / 0.5)  # (0.3 * 0 + 0.2 * 1) / (0.3 + 0.2)
    assert np.isnan(got[2])
    with pytest.raises(InputError, match=r"benchmark scores must be positive"):
        model_weights({"a": 0.0, "b": 1.0})


# ---------------------------------------------------------------------------------------------
# the stage, on files shaped like the infer and distort outputs


def _manifest(image_id: str) -> list[dict]:
    return [dict(image_id=image_id, corruption="fog", category="environment", roi_level=r, bg_level=b,
                 region_type="UD" if r == b else ("ROI-DD" if r > b else "BG-DD"), roi_severity=float(r),
                 bg_severity=float(b), path=f"miqa_det/images/{image_id}/{layout.distorted_name(image_id, 'fog', r, b)}",
                 width=80, height=80, psnr=30.0 - r - b, ssim=0.9, sha256=f"hash-{r}{b}") for r, b in ((1, 1), (2, 1))]


def _uncompressed_rle(box, h=80, w=80) -> dict:
    """A rectangle as COCO's uncompressed RLE (how COCO stores crowd regions)."""
    m = np.zeros((h, w), np.uint8)
    x1, y1, x2, y2 = box
    m[y1:y2, x1:x2] = 1
    flat = m.flatten(order="F")
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    return {"size": [h, w], "counts": runs if flat[0] == 0 else [0] + runs}


def _write_inputs(tmp_path, task: str):
    from miqd.distort.engine import MANIFEST_SCHEMA

    manifest = pd.DataFrame(_manifest("000000000007"))
    write_table(tmp_path / "manifest.parquet", pa.Table.from_pandas(manifest, schema=MANIFEST_SCHEMA,
                                                                    preserve_index=False))
    (tmp_path / "x.png").write_bytes(b"the source image's bytes")
    select = [dict(image_id="000000000007", path=str(tmp_path / "x.png"), width=80, height=80, class_index=None,
                   class_name=None, categories=[1], score=None, selected=True)]
    write_table(tmp_path / "select.parquet", pa.Table.from_pylist(select, schema=SELECT_SCHEMA))
    annotations = {"images": [{"id": 7, "file_name": "x.png", "width": 80, "height": 80}],
                   "annotations": [
                       {"id": 1, "image_id": 7, "category_id": 1, "iscrowd": 0, "bbox": [0, 0, 10, 10], "area": 100,
                        "segmentation": [[0, 0, 10, 0, 10, 10, 0, 10]]},
                       {"id": 2, "image_id": 7, "category_id": 1, "iscrowd": 0, "bbox": [20, 20, 10, 10], "area": 100,
                        "segmentation": [[20, 20, 30, 20, 30, 30, 20, 30]]},
                       {"id": 3, "image_id": 7, "category_id": 1, "iscrowd": 1, "bbox": [40, 40, 30, 30], "area": 900,
                        "segmentation": _uncompressed_rle(CROWD)}],
                   "categories": [{"id": 1, "name": "person"}]}
    (tmp_path / "instances.json").write_text(json.dumps(annotations))

    rows = []
    keys = [("000000000007", "original", 0, 0), ("000000000007", "fog", 1, 1), ("000000000007", "fog", 2, 1)]
    preds = {  # model "m": the hand-worked example on (1, 1); nothing at all on (2, 1)
        "original": ([A, B, C], [0.9, 0.8, 0.3]), "fog11": (DIST["boxes"], DIST["scores"]), "fog21": ([], [])}
    hashes = [file_sha256(b"the source image's bytes"), "hash-11", "hash-21"]
    for key, sha, (boxes, scores) in zip(keys, hashes, preds.values(), strict=True):
        row = dict(image_id=key[0], corruption=key[1], roi_level=key[2], bg_level=key[3], sha256=sha,
                   boxes_xyxy=boxes, scores=scores, labels=[1] * len(boxes))
        if task == "ins":
            row.update(masks_rle=[_rect_rle(b) for b in boxes], height=80, width=80)
        rows.append(row)
    pred_path = tmp_path / "m.parquet"
    write_table(pred_path, pa.Table.from_pylist(rows, schema=predictions.schema(task)))
    write_table(tmp_path / "index.parquet", pa.Table.from_pylist(
        [dict(model="m", fingerprint="f", weights="random", path=str(pred_path), rows=3)], schema=INDEX_SCHEMA))


@pytest.mark.parametrize("task", ["det", "ins"])
def test_label_stage_writes_per_model_scores_and_mmos(tmp_path, task):
    _write_inputs(tmp_path, task)
    out = tmp_path / "label.parquet"
    settings = stage.LabelSettings()
    table = stage.run(task, [{"id": "m", "benchmark": 40.0}], [str(tmp_path / "index.parquet")],
                      str(tmp_path / "manifest.parquet"), str(tmp_path / "select.parquet"),
                      str(tmp_path / "instances.json"), str(out), settings)
    stored = pq.read_table(out)
    assert stored.column_names == ["image_id", "corruption", "roi_level", "bg_level", "region_type", "path",
                                   "psnr", "ssim", "sha256", "consistency", "accuracy", "composite",
                                   "consistency/m", "accuracy/m"]
    got = stored.to_pandas()
    assert got["consistency/m"].tolist() == pytest.approx([CONSISTENCY, 0.0])
    assert got["accuracy/m"].tolist() == pytest.approx([ACCURACY, 0.0])
    assert got["composite"].tolist() == pytest.approx([(CONSISTENCY + ACCURACY) / 2, 0.0])
    assert got["region_type"].tolist() == ["UD", "ROI-DD"]
    meta = stored.schema.metadata
    assert json.loads(meta[b"miqd.alpha"]) == {"m": 1.0}
    assert json.loads(meta[b"miqd.random_models"]) == ["m"]
    pd.testing.assert_frame_equal(table.reset_index(drop=True), got)


def test_label_stage_names_what_is_missing(tmp_path):
    _write_inputs(tmp_path, "det")
    args = ([str(tmp_path / "index.parquet")], str(tmp_path / "manifest.parquet"), str(tmp_path / "select.parquet"),
            str(tmp_path / "instances.json"), str(tmp_path / "o.parquet"), stage.LabelSettings())
    with pytest.raises(InputError, match=r"no predictions of det models \['other'\] in the infer indexes"):
        stage.run("det", [{"id": "m", "benchmark": 1.0}, {"id": "other", "benchmark": 1.0}], *args)
    table = pq.read_table(tmp_path / "m.parquet")
    write_table(tmp_path / "m.parquet", table.slice(0, 2))  # the (2, 1) image has no prediction
    with pytest.raises(InputError, match=r"model 'm' .* have no row for image 000000000007 fog \(2, 1\)"):
        stage.run("det", [{"id": "m", "benchmark": 1.0}], *args)


def _rewrite(path, change):
    rows = pq.read_table(path).to_pylist()
    change(rows)
    write_table(path, pa.Table.from_pylist(rows, schema=predictions.schema("det")))


@pytest.mark.parametrize("change, message", [
    (lambda rows: rows[1].update(sha256="hash-of-an-older-png"),
     r"the row of image 000000000007 fog \(1, 1\) was computed from another version of that image .*rerun its infer"),
    (lambda rows: rows[0].update(sha256="stale"), r"image 000000000007 original \(0, 0\) was computed from another"),
    (lambda rows: rows[1].update(labels=[1, 1]), r"the row of image 000000000007 fog \(1, 1\) has 3 boxes but 2 labels"),
    (lambda rows: rows[1].update(scores=[0.9, 0.8]), r"has 3 boxes but 2 scores"),
    (lambda rows: rows[1].update(scores=[0.9, float("nan"), 0.1]), r"fog \(1, 1\) has a NaN or infinite score"),
    (lambda rows: rows[0].update(scores=[float("nan"), 0.8, 0.3]),
     r"the row of image 000000000007 \(original\) has a NaN or infinite score"),
    (lambda rows: rows.append(dict(rows[2])), r"hold two rows for image 000000000007 fog \(2, 1\)"),
])
def test_prediction_rows_are_checked_where_they_are_read(tmp_path, change, message):
    """Stale, malformed or duplicated rows are errors naming the model, the file and the image,
    never labels (a NaN in the clean predictions would silently leave the consistency reference)."""
    _write_inputs(tmp_path, "det")
    _rewrite(tmp_path / "m.parquet", change)
    with pytest.raises(InputError, match=r"predictions of model 'm' \(.*m\.parquet\)") as err:
        stage.run("det", [{"id": "m", "benchmark": 1.0}], [str(tmp_path / "index.parquet")],
                  str(tmp_path / "manifest.parquet"), str(tmp_path / "select.parquet"),
                  str(tmp_path / "instances.json"), str(tmp_path / "o.parquet"), stage.LabelSettings())
    assert re.search(message, str(err.value)), str(err.value)
    assert not (tmp_path / "o.parquet").exists()
