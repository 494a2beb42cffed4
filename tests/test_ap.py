"""Per-image AP against pycocotools' COCOeval on the same one-image COCO set.

The reference is COCOeval itself (iouType 'bbox' / 'segm', its own stats[0] or precision array),
built in memory for each case; the cases are seeded random images with the awkward parts of COCO's
rules mixed in: crowd regions, duplicate boxes (equal IoUs), tied scores, several classes, classes
only in the predictions, more than 100 detections, zero-area boxes and empty masks.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from miqd.errors import InputError
from miqd.label.ap import (
    COCO_IOU_THRESHOLDS,
    ap_from_ious,
    batch_ap_boxes,
    batch_ap_masks,
    box_iou,
    image_ap_boxes,
    image_ap_masks,
    mask_iou,
    xyxy_to_xywh,
)

W, H = 640, 480  # box cases
MH, MW = 48, 64  # mask cases (small, so rasterising and COCOeval stay fast)


# ---------------------------------------------------------------------------------------------
# the reference: COCOeval on a one-image dataset


def _coco(anns: list[dict], categories: list[int], h: int, w: int) -> COCO:
    coco = COCO()
    coco.dataset = {"images": [{"id": 1, "height": h, "width": w}], "annotations": anns,
                    "categories": [{"id": c, "name": str(c)} for c in categories]}
    coco.createIndex()
    return coco


def coco_ap(iou_type: str, gt: dict, dt: dict, h: int, w: int, iou_thrs=None, max_dets=None) -> float:
    """stats[0] of COCOeval (or its equivalent for other maxDets); NaN where COCOeval gives -1."""
    gt_anns, dt_anns = [], []
    for i in range(len(gt["labels"])):
        ann = {"id": i + 1, "image_id": 1, "category_id": int(gt["labels"][i]), "iscrowd": int(gt["crowd"][i])}
        if iou_type == "bbox":
            x1, y1, x2, y2 = (float(v) for v in gt["boxes"][i])
            ann["bbox"] = [float(v) for v in gt["xywh"][i]] if "xywh" in gt else [x1, y1, x2 - x1, y2 - y1]
            ann["area"] = ann["bbox"][2] * ann["bbox"][3]
        else:
            rle = {"size": [h, w], "counts": gt["counts"][i]}
            ann["segmentation"] = rle
            ann["area"] = float(mask_utils.area(rle))
        if "area" in gt:  # an annotation's own `area` field, as COCO files give it
            ann["area"] = float(gt["area"][i])
        gt_anns.append(ann)
    for i in range(len(dt["labels"])):  # what COCO.loadRes adds to each result
        ann = {"id": i + 1, "image_id": 1, "category_id": int(dt["labels"][i]), "score": float(dt["scores"][i]),
               "iscrowd": 0}
        if iou_type == "bbox":
            x1, y1, x2, y2 = (float(v) for v in dt["boxes"][i])
            ann["bbox"] = [float(v) for v in dt["xywh"][i]] if "xywh" in dt else [x1, y1, x2 - x1, y2 - y1]
            ann["area"] = ann["bbox"][2] * ann["bbox"][3]
        else:
            rle = {"size": [h, w], "counts": dt["counts"][i]}
            ann["segmentation"] = rle
            ann["area"] = float(mask_utils.area(rle))
            ann["bbox"] = mask_utils.toBbox(rle).tolist()
        dt_anns.append(ann)
    categories = sorted({int(c) for c in gt["labels"]} | {int(c) for c in dt["labels"]}) or [1]
    with contextlib.redirect_stdout(io.StringIO()):
        E = COCOeval(_coco(gt_anns, categories, h, w), _coco(dt_anns, categories, h, w), iou_type)
        E.params.imgIds = [1]
        if iou_thrs is not None:
            E.params.iouThrs = np.asarray(iou_thrs, dtype=np.float64)
        if max_dets is not None:
            E.params.maxDets = [max_dets]
        E.evaluate()
        E.accumulate()
        if max_dets is None:
            E.summarize()
            ap = E.stats[0]
        else:  # stats[0]'s formula at the only maxDets
            s = E.eval["precision"][:, :, :, 0, -1]
            ap = np.mean(s[s > -1]) if (s > -1).any() else -1
    return float("nan") if ap == -1 else float(ap)


def _regime(ap: float) -> str:
    return "nan" if np.isnan(ap) else "zero" if ap == 0 else "one" if abs(ap - 1) < 1e-9 else "between"


def assert_ap_equal(ours: float, ref: float, case) -> None:
    if np.isnan(ref):
        assert np.isnan(ours), f"case {case}: COCOeval gives -1 (no non-crowd gt), got {ours}"
    else:
        assert abs(ours - ref) <= 1e-6, f"case {case}: ours {ours} vs COCOeval {ref}"


# ---------------------------------------------------------------------------------------------
# random cases


def random_boxes_case(rng: np.random.Generator) -> tuple[dict, dict]:
    n_classes = int(rng.integers(1, 5))
    n_gt = int(rng.choice([0, 1, 2, 4, 7, 10], p=[0.08, 0.12, 0.2, 0.2, 0.25, 0.15]))
    xy = rng.uniform(0, [W - 20, H - 20], size=(n_gt, 2))
    wh = rng.uniform(4, 200, size=(n_gt, 2))
    gt_boxes = np.concatenate([xy, np.minimum(xy + wh, [W, H])], axis=1)
    if n_gt and rng.random() < 0.5:  # integer pixel boxes: more exact ties
        gt_boxes = np.round(gt_boxes)
    if n_gt >= 2 and rng.random() < 0.4:  # duplicate gt box: a det matches both with equal IoU
        gt_boxes[1] = gt_boxes[0]
    if n_gt and rng.random() < 0.15:  # zero-area gt
        gt_boxes[-1, 2] = gt_boxes[-1, 0]
    gt_labels = rng.integers(1, n_classes + 1, size=n_gt)
    if n_gt >= 2 and rng.random() < 0.4:
        gt_labels[1] = gt_labels[0]
    crowd = rng.random(n_gt) < 0.15
    if n_gt and rng.random() < 0.08:  # only crowd gt
        crowd[:] = True

    gt = {"boxes": gt_boxes, "labels": gt_labels, "crowd": crowd}
    return gt, random_box_predictions(rng, gt, n_classes)


def random_box_predictions(rng: np.random.Generator, gt: dict, n_classes: int) -> dict:
    """Jittered copies of the gts (some exact, some several times), random boxes, classes the gt
    lacks, sometimes more than 100 of one class; or, now and then, the gt itself (AP 1)."""
    gt_boxes, gt_labels, crowd = gt["boxes"], gt["labels"], gt["crowd"]
    n_gt = len(gt_labels)
    if rng.random() < 0.08:
        keep = ~crowd
        return {"boxes": gt_boxes[keep], "labels": gt_labels[keep], "scores": rng.random(int(keep.sum()))}
    dets = []
    for i in range(n_gt):
        for _ in range(int(rng.choice([0, 1, 1, 2, 3]))):
            jitter = 0.0 if rng.random() < 0.25 else rng.normal(0, 0.08) * (gt_boxes[i, 2:] - gt_boxes[i, :2]).max()
            box = gt_boxes[i] + jitter * rng.standard_normal(4)
            box[2:] = np.maximum(box[2:], box[:2])
            label = gt_labels[i] if rng.random() < 0.85 else rng.integers(1, n_classes + 3)
            dets.append((box, label))
    n_rand = int(rng.choice([0, 2, 5, 20, 130], p=[0.2, 0.3, 0.3, 0.12, 0.08]))
    for _ in range(n_rand):
        xy = rng.uniform(0, [W - 20, H - 20])
        box = np.concatenate([xy, xy + rng.uniform(0, 150, 2)])
        dets.append((box, gt_labels[0] if n_gt and n_rand > 100 else rng.integers(1, n_classes + 3)))
    if dets and rng.random() < 0.3:  # duplicate predictions
        dets += [dets[int(rng.integers(len(dets)))] for _ in range(3)]
    if dets and rng.random() < 0.15:  # zero-area prediction
        box = dets[0][0].copy()
        box[3] = box[1]
        dets.append((box, dets[0][1]))
    order = rng.permutation(len(dets))
    scores = rng.random(len(dets))
    if rng.random() < 0.5:  # tied scores
        scores = np.round(scores, 1)
    return {"boxes": np.array([dets[i][0] for i in order]).reshape(-1, 4),
            "labels": np.array([dets[i][1] for i in order], dtype=np.int64), "scores": scores}


def _encode(mask: np.ndarray) -> bytes:
    return mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))["counts"]


def random_mask(rng: np.random.Generator) -> np.ndarray:
    if rng.random() < 0.5:  # rectangle
        y0, x0 = rng.integers(0, MH - 4), rng.integers(0, MW - 4)
        y1, x1 = y0 + rng.integers(2, 25), x0 + rng.integers(2, 30)
        m = np.zeros((MH, MW), bool)
        m[y0:y1, x0:x1] = True
        return m
    cx, cy = rng.uniform(5, MW - 5), rng.uniform(5, MH - 5)
    angles = np.sort(rng.uniform(0, 2 * np.pi, int(rng.integers(3, 9))))
    radii = rng.uniform(3, 18, angles.size)
    poly = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], 1).ravel().tolist()
    return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([poly], MH, MW))).astype(bool)


def random_masks_case(rng: np.random.Generator) -> tuple[dict, dict]:
    n_classes = int(rng.integers(1, 4))
    n_gt = int(rng.choice([0, 1, 3, 5, 8], p=[0.08, 0.17, 0.25, 0.3, 0.2]))
    gt_masks = [random_mask(rng) for _ in range(n_gt)]
    if n_gt >= 2 and rng.random() < 0.3:
        gt_masks[1] = gt_masks[0].copy()
    gt_labels = rng.integers(1, n_classes + 1, size=n_gt)
    if n_gt >= 2 and rng.random() < 0.4:
        gt_labels[1] = gt_labels[0]
    crowd = rng.random(n_gt) < 0.2
    if n_gt and rng.random() < 0.08:
        crowd[:] = True
    gt = {"counts": [_encode(m) for m in gt_masks], "labels": gt_labels, "crowd": crowd}
    if rng.random() < 0.08:  # the gt itself: AP 1
        keep = np.flatnonzero(~crowd)
        return gt, {"counts": [gt["counts"][i] for i in keep], "labels": gt_labels[keep],
                    "scores": rng.random(keep.size)}
    dets = []
    for i in range(n_gt):
        for _ in range(int(rng.choice([0, 1, 1, 2]))):
            m = gt_masks[i]
            if rng.random() < 0.7:
                m = np.roll(m, tuple(rng.integers(-3, 4, 2)), axis=(0, 1))
                m = m | (random_mask(rng) if rng.random() < 0.2 else False)
            dets.append((m, gt_labels[i] if rng.random() < 0.85 else rng.integers(1, n_classes + 3)))
    n_rand = int(rng.choice([0, 2, 6, 110], p=[0.2, 0.4, 0.33, 0.07]))
    for _ in range(n_rand):
        dets.append((random_mask(rng), gt_labels[0] if n_gt and n_rand > 100 else rng.integers(1, n_classes + 3)))
    if dets and rng.random() < 0.2:
        dets.append((np.zeros((MH, MW), bool), dets[0][1]))  # empty mask
    if dets and rng.random() < 0.3:
        dets += [dets[int(rng.integers(len(dets)))] for _ in range(2)]
    order = rng.permutation(len(dets))
    scores = rng.random(len(dets))
    if rng.random() < 0.5:
        scores = np.round(scores, 1)
    return (gt,
            {"counts": [_encode(dets[i][0]) for i in order], "labels": np.array([dets[i][1] for i in order], np.int64),
             "scores": scores})


def _ours_boxes(gt, dt, **kw) -> float:
    """Our AP on the boxes COCOeval sees: xyxy turned into COCO's xywh once, as coco_ap does."""
    return image_ap_boxes(xyxy_to_xywh(dt["boxes"]), dt["scores"], dt["labels"], xyxy_to_xywh(gt["boxes"]),
                          gt["labels"], gt["crowd"], **kw)


def _ours_masks(gt, dt, **kw) -> float:
    return image_ap_masks(dt["counts"], dt["scores"], dt["labels"], gt["counts"], gt["labels"], gt["crowd"],
                          size=(MH, MW), **kw)


# ---------------------------------------------------------------------------------------------
# against COCOeval


def test_boxes_match_cocoeval_on_random_images():
    rng = np.random.default_rng(20250811)
    seen = {"nan": 0, "zero": 0, "one": 0, "between": 0, "over100": 0}
    for case in range(200):
        gt, dt = random_boxes_case(rng)
        ref = coco_ap("bbox", gt, dt, H, W)
        assert_ap_equal(_ours_boxes(gt, dt), ref, case)
        if case % 4 == 0:  # the single-threshold variant (AP50)
            ref50 = coco_ap("bbox", gt, dt, H, W, iou_thrs=[0.5])
            assert_ap_equal(_ours_boxes(gt, dt, iou_thresholds=[0.5]), ref50, case)
        if case % 10 == 0:  # another maxDets
            ref5 = coco_ap("bbox", gt, dt, H, W, max_dets=5)
            assert_ap_equal(_ours_boxes(gt, dt, max_dets=5), ref5, case)
        key = _regime(ref)
        seen[key] += 1
        seen["over100"] += int(np.bincount(dt["labels"]).max(initial=0) > 100)
    # the generator reaches every regime COCO's rules distinguish
    assert all(v >= 3 for v in seen.values()), seen


def test_masks_match_cocoeval_on_random_images():
    rng = np.random.default_rng(7)
    seen = {"nan": 0, "zero": 0, "one": 0, "between": 0}
    for case in range(100):
        gt, dt = random_masks_case(rng)
        ref = coco_ap("segm", gt, dt, MH, MW)
        assert_ap_equal(_ours_masks(gt, dt), ref, case)
        if case % 3 == 0:
            ref50 = coco_ap("segm", gt, dt, MH, MW, iou_thrs=[0.5])
            assert_ap_equal(_ours_masks(gt, dt, iou_thresholds=[0.5]), ref50, case)
        key = _regime(ref)
        seen[key] += 1
    assert all(v >= 3 for v in seen.values()), seen


@pytest.mark.parametrize("which", ["no predictions", "no gt", "only crowd gt", "prediction classes only"])
def test_edge_cases_match_cocoeval(which):
    rng = np.random.default_rng(3)
    gt, dt = random_boxes_case(rng)
    while len(gt["labels"]) < 3 or len(dt["labels"]) < 3:
        gt, dt = random_boxes_case(rng)
    if which == "no predictions":
        dt = {"boxes": np.zeros((0, 4)), "labels": np.zeros(0, np.int64), "scores": np.zeros(0)}
    elif which == "no gt":
        gt = {"boxes": np.zeros((0, 4)), "labels": np.zeros(0, np.int64), "crowd": np.zeros(0, bool)}
    elif which == "only crowd gt":
        gt["crowd"][:] = True
    else:
        dt["labels"] = dt["labels"] + 100
    ref = coco_ap("bbox", gt, dt, H, W)
    ours = _ours_boxes(gt, dt)
    assert_ap_equal(ours, ref, which)
    expected = {"no predictions": 0.0, "no gt": np.nan, "only crowd gt": np.nan, "prediction classes only": 0.0}
    np.testing.assert_equal(ours, expected[which])


def test_tie_and_crowd_rules_as_in_cocoeval():
    # gts A=[0,0,10,10] and B=[10,0,20,10]; d1 (score .9) = [5,0,15,10] overlaps each by exactly
    # 50/150. COCOeval gives it the later gt, B, so d2 (score .8) = A still finds A free: TP, TP,
    # AP 1 at t = 0.3. Had d1 taken A, d2 would be a false positive (AP 0.5).
    gt = {"boxes": np.array([[0, 0, 10, 10], [10, 0, 20, 10]], float), "labels": np.array([1, 1]),
          "crowd": np.array([False, False])}
    dt = {"boxes": np.array([[5, 0, 15, 10], [0, 0, 10, 10]], float), "labels": np.array([1, 1]),
          "scores": np.array([0.9, 0.8])}
    assert _ours_boxes(gt, dt, iou_thresholds=[0.3]) == pytest.approx(1.0, abs=1e-12)
    assert_ap_equal(_ours_boxes(gt, dt, iou_thresholds=[0.3]), coco_ap("bbox", gt, dt, H, W, iou_thrs=[0.3]), "tie")
    # once a det holds a non-crowd gt it never moves to a crowd one, even one it overlaps more: crowd
    # gts come last and the search stops at them. With B crowd, d1's IoU with B is 50/100 = 0.5
    # (intersection over d1's area) against 1/3 with A, yet d1 keeps A: TP, AP 1. Moving to B would
    # make d1 ignored and leave A unmatched: AP 0.
    gt["crowd"] = np.array([False, True])
    d1 = {k: v[:1] for k, v in dt.items()}
    assert _ours_boxes(gt, d1, iou_thresholds=[0.3]) == pytest.approx(1.0, abs=1e-12)
    assert_ap_equal(_ours_boxes(gt, d1, iou_thresholds=[0.3]), coco_ap("bbox", gt, d1, H, W, iou_thrs=[0.3]), "crowd")
    # the same with the crowd gt first in the input (gts are ordered non-crowd first)
    gt = {k: v[::-1].copy() for k, v in gt.items()}
    assert _ours_boxes(gt, d1, iou_thresholds=[0.3]) == pytest.approx(1.0, abs=1e-12)


def test_threshold_one_is_capped_as_in_cocoeval():
    # COCOeval matches at min(t, 1 - 1e-10): at t = 1 a box off by 1e-9 px still counts
    gt = {"boxes": np.array([[0.0, 0.0, 100.0, 100.0]]), "labels": np.array([1]), "crowd": np.array([False])}
    dt = {"boxes": np.array([[0.0, 0.0, 100.0, 100.0 - 1e-9]]), "labels": np.array([1]), "scores": np.array([0.5])}
    ours = _ours_boxes(gt, dt, iou_thresholds=[1.0])
    assert_ap_equal(ours, coco_ap("bbox", gt, dt, H, W, iou_thrs=[1.0]), "t=1")
    assert ours == pytest.approx(1.0, abs=1e-12)


def test_area_range_all_is_applied_as_in_cocoeval():
    """COCO's "all" range is [0, 1e10]: a gt whose `area` field lies above it is ignored (here B, which
    d3 then matches and is ignored with), and an unmatched detection larger than it (d1, 2e5 px a
    side) is ignored, not a false positive. Only A counts, and d2 finds it: AP 1 (0.5 without)."""
    gt = {"boxes": np.array([[0, 0, 10, 10], [20, 0, 30, 10]], float), "labels": np.array([1, 1]),
          "crowd": np.array([False, False]), "area": np.array([100.0, 2e10])}
    dt = {"boxes": np.array([[0, 0, 2e5, 2e5], [0, 0, 10, 10], [20, 0, 30, 10]], float),
          "labels": np.array([1, 1, 1]), "scores": np.array([0.9, 0.8, 0.7])}
    ref = coco_ap("bbox", gt, dt, H, W)
    ours = _ours_boxes(gt, dt, gt_area=gt["area"])
    assert ref == pytest.approx(1.0, abs=1e-12)
    assert_ap_equal(ours, ref, "area range")
    only_b = {k: v[1:] for k, v in gt.items()}  # every gt ignored: COCOeval says -1
    assert np.isnan(coco_ap("bbox", only_b, dt, H, W)) and np.isnan(_ours_boxes(only_b, dt, gt_area=only_b["area"]))


def test_literal_thresholds_are_cocos_linspace_values():
    """A config's 0.9 is 0.9; COCO's 9th threshold is 0.8999999999999999. An IoU between the two
    (a 1 x 0.8999999999999999 box inside a unit gt) matches in COCOeval, so it must match here."""
    gt = {"boxes": np.array([[0.0, 0.0, 1.0, 1.0]]), "labels": np.array([1]), "crowd": np.array([False])}
    dt = {"boxes": np.array([[0.0, 0.0, 1.0, 0.8999999999999999]]), "labels": np.array([1]),
          "scores": np.array([0.5])}
    iou = box_iou(xyxy_to_xywh(dt["boxes"]), xyxy_to_xywh(gt["boxes"]))[0, 0]
    assert COCO_IOU_THRESHOLDS[8] <= iou < 0.9
    literal = [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95]  # as YAML (and the schema) write them
    ref = coco_ap("bbox", gt, dt, H, W)
    assert ref == pytest.approx(0.9, abs=1e-12)
    assert_ap_equal(_ours_boxes(gt, dt, iou_thresholds=literal), ref, "literal thresholds")


def test_ground_truth_keeps_cocos_widths_to_the_last_bit(tmp_path):
    """COCO stores [x, y, w, h]; turned into corners and back, w becomes (x + w) - x, an ulp off for
    most 2-decimal boxes. Here the detection's IoU with the annotation is 0.49999999999999983 (no
    match at 0.5: AP 0), with the round-tripped box exactly 0.5 (a match: AP 0.1)."""
    import json

    from miqd.label.agreement import Objects, detection_scores
    from miqd.label.stage import coco_ground_truth

    bbox, det = [212.61, 310.11, 199.04, 190.04], [212.61, 310.11, 99.52, 190.04]
    assert (bbox[0] + bbox[2]) - bbox[0] != bbox[2]
    coco = {"images": [{"id": 7, "file_name": "x.jpg", "width": 640, "height": 640}],
            "annotations": [{"id": 1, "image_id": 7, "category_id": 1, "iscrowd": 0, "bbox": bbox,
                             "area": bbox[2] * bbox[3], "segmentation": []}],
            "categories": [{"id": 1, "name": "a"}]}
    (tmp_path / "gt.json").write_text(json.dumps(coco))
    reference = coco_ground_truth(str(tmp_path / "gt.json"), ["000000000007"], with_masks=False)["000000000007"]
    ours = detection_scores([Objects(boxes_xywh=np.array([det]), labels=np.array([1]), scores=np.array([0.9]))],
                            reference, masks=False)[0]
    corners = lambda b: [b[0], b[1], b[0] + b[2], b[1] + b[3]]  # noqa: E731
    ref = coco_ap("bbox", {"boxes": np.array([corners(bbox)]), "xywh": [bbox], "labels": np.array([1]),
                           "crowd": np.array([False])},
                  {"boxes": np.array([corners(det)]), "xywh": [det], "labels": np.array([1]),
                   "scores": np.array([0.9])}, 640, 640)
    assert ref == 0.0
    assert_ap_equal(ours, ref, "xywh kept")


# ---------------------------------------------------------------------------------------------
# hand-worked examples


def test_hand_worked_det_example():
    # (COCO's precision is tp / (tp + fp + eps), so "1" below is 1 - 2e-16: compared to 1e-12.)
    # class 1: gts A=[0,0,10,10], B=[20,0,30,10]. Dets by score: d1 = A (IoU 1), d2 = [20,0,30,5]
    # (IoU with B = 50/100 = 0.5), d3 far away (FP).
    #   t = 0.5: TP, TP, FP -> precision [1, 1, 2/3], recall [.5, 1, 1]: 1 at all 101 recall
    #     points -> AP 1.
    #   t >= 0.55 (9 thresholds): TP, FP, FP -> recall stays .5; precision 1 at the 51 recall points
    #     0..0.50, 0 above -> AP 51/101.
    #   class 1: (1 + 9 * 51/101) / 10 = 560/1010.
    # class 2: crowd C=[100,100,200,200], non-crowd D=[300,300,310,310]. d4 (score .95) inside C:
    #   IoU with a crowd gt = inter/area(dt) = 1 -> ignored; d5 (.6) = D -> TP. Precision 1 at every
    #   recall point -> AP 1.
    # class 3: one det, no gt -> does not count.
    # image AP = (560/1010 + 1) / 2
    gt = {"boxes": np.array([[0, 0, 10, 10], [20, 0, 30, 10], [100, 100, 200, 200], [300, 300, 310, 310]], float),
          "labels": np.array([1, 1, 2, 2]), "crowd": np.array([False, False, True, False])}
    dt = {"boxes": np.array([[0, 0, 10, 10], [20, 0, 30, 5], [50, 50, 60, 60], [110, 110, 120, 120],
                             [300, 300, 310, 310], [0, 0, 5, 5]], float),
          "labels": np.array([1, 1, 1, 2, 2, 3]), "scores": np.array([0.9, 0.8, 0.7, 0.95, 0.6, 0.99])}
    expected = (560 / 1010 + 1) / 2
    assert abs(_ours_boxes(gt, dt) - expected) < 1e-12
    assert abs(coco_ap("bbox", gt, dt, H, W) - expected) < 1e-12
    # AP50 alone: class 1 is 1 at t = 0.5, class 2 is 1
    assert _ours_boxes(gt, dt, iou_thresholds=[0.5]) == pytest.approx(1.0, abs=1e-12)


def test_hand_worked_ins_example():
    # 10x10 image. class 1: gt G = rows 0-4 (50 px). d1 (score .9): rows 0-4, cols 0-7, plus rows 0-1
    # of col 8 = 42 px inside G -> IoU .84; d2 (score .8) = G -> IoU 1.
    #   t <= .8 (7 thresholds): d1 TP, d2 FP (G taken) -> precision [1, .5], recall [1, 1] -> AP 1.
    #   t >= .85 (3): d1 FP, d2 TP -> precision [0, .5] made monotone [.5, .5], recall [0, 1]
    #     -> AP .5.
    #   class 1: (7 * 1 + 3 * .5) / 10 = .85.
    # class 2 has only a crowd gt (rows 5-9) and one det inside it: it does not count.
    g = np.zeros((10, 10), bool)
    g[:5] = True
    d1 = np.zeros((10, 10), bool)
    d1[:5, :8] = True
    d1[:2, 8] = True
    crowd = np.zeros((10, 10), bool)
    crowd[5:] = True
    d3 = np.zeros((10, 10), bool)
    d3[6:8, 2:6] = True
    gt = {"counts": [_encode(g), _encode(crowd)], "labels": np.array([1, 2]), "crowd": np.array([False, True])}
    dt = {"counts": [_encode(d1), _encode(g), _encode(d3)], "labels": np.array([1, 1, 2]),
          "scores": np.array([0.9, 0.8, 0.7])}
    ours = image_ap_masks(dt["counts"], dt["scores"], dt["labels"], gt["counts"], gt["labels"], gt["crowd"],
                          size=(10, 10))
    assert abs(ours - 0.85) < 1e-12
    assert abs(coco_ap("segm", gt, dt, 10, 10) - 0.85) < 1e-12


# ---------------------------------------------------------------------------------------------
# the pieces agree with each other and with pycocotools


def test_box_iou_equals_pycocotools():
    rng = np.random.default_rng(1)
    gt, dt = random_boxes_case(rng)
    while len(gt["labels"]) < 4:
        gt, dt = random_boxes_case(rng)
    gt["crowd"][0] = True
    dt_xywh, gt_xywh = xyxy_to_xywh(dt["boxes"]), xyxy_to_xywh(gt["boxes"])
    ref = mask_utils.iou(dt_xywh, gt_xywh, gt["crowd"].astype(np.uint8))
    np.testing.assert_array_equal(box_iou(dt_xywh, gt_xywh, gt["crowd"]), ref)
    assert box_iou(np.zeros((0, 4)), gt["boxes"]).shape == (0, len(gt["boxes"]))


def test_mask_iou_equals_pycocotools_and_takes_str_or_bytes():
    rng = np.random.default_rng(2)
    for case in range(20):
        gt, dt = random_masks_case(rng)
        if case == 0:
            dt["counts"].append(_encode(np.zeros((MH, MW), bool)))  # empty
            dt["counts"].append(_encode(np.ones((MH, MW), bool)))  # full: runs start with a 0
        if not len(gt["counts"]) or not len(dt["counts"]):
            continue
        ref = mask_utils.iou([{"size": [MH, MW], "counts": c} for c in dt["counts"]],
                             [{"size": [MH, MW], "counts": c} for c in gt["counts"]], gt["crowd"].astype(np.uint8))
        ours = mask_iou([c.decode("ascii") for c in dt["counts"]], gt["counts"], gt["crowd"], size=(MH, MW))
        np.testing.assert_array_equal(ours, ref, err_msg=f"case {case}")
    assert mask_iou([], gt["counts"], size=(MH, MW)).shape == (0, len(gt["counts"]))


def test_mask_iou_equals_pycocotools_at_coco_size():
    # 640x480 polygons with counts above 2**16 (4-character deltas) and long runs across columns
    rng = np.random.default_rng(4)
    h, w = 480, 640
    polys = []
    for _ in range(12):
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        a = np.sort(rng.uniform(0, 2 * np.pi, 12))
        r = rng.uniform(10, 300, a.size)
        polys.append(np.stack([cx + r * np.cos(a), cy + r * np.sin(a)], 1).ravel().tolist())
    rles = [mask_utils.merge(mask_utils.frPyObjects([p], h, w)) for p in polys]
    rles.append(mask_utils.encode(np.asfortranarray(np.ones((h, w), np.uint8))))
    crowd = np.arange(len(rles)) % 4 == 0
    ref = mask_utils.iou(rles, rles, crowd.astype(np.uint8))
    ours = mask_iou([r["counts"] for r in rles], [r["counts"] for r in rles], crowd, size=(h, w))
    np.testing.assert_array_equal(ours, ref)
    assert (ours > 0).mean() > 0.3


def test_batch_equals_one_image_at_a_time():
    rng = np.random.default_rng(5)
    gt, _ = random_boxes_case(rng)
    while len(gt["labels"]) < 4:
        gt, _ = random_boxes_case(rng)
    sets = [random_box_predictions(rng, gt, 4) for _ in range(40)]
    sets[3] = {"boxes": np.zeros((0, 4)), "labels": np.zeros(0, np.int64), "scores": np.zeros(0)}
    ours = batch_ap_boxes(xyxy_to_xywh(np.concatenate([s["boxes"] for s in sets])),
                          np.concatenate([s["scores"] for s in sets]),
                          np.concatenate([s["labels"] for s in sets]), [len(s["labels"]) for s in sets],
                          xyxy_to_xywh(gt["boxes"]), gt["labels"], gt["crowd"])
    expected = [_ours_boxes(gt, s) for s in sets]
    np.testing.assert_array_equal(ours, expected)
    assert len({round(v, 6) for v in expected}) > 10  # the sets differ
    assert batch_ap_boxes(np.zeros((0, 4)), [], [], np.zeros(0, int), gt["boxes"], gt["labels"]).shape == (0,)


def test_batch_masks_equals_one_image_at_a_time():
    rng = np.random.default_rng(6)
    gt, _ = random_masks_case(rng)
    while len(gt["labels"]) < 4 or gt["crowd"].all():
        gt, _ = random_masks_case(rng)
    sets = []
    for _ in range(15):  # predictions over the same gt: re-draw cases until the labels overlap
        _, dt = random_masks_case(rng)
        dt["labels"] = np.where(rng.random(len(dt["labels"])) < 0.7, rng.choice(gt["labels"], len(dt["labels"])),
                                dt["labels"]) if len(dt["labels"]) else dt["labels"]
        sets.append(dt)
    ours = batch_ap_masks([c for s in sets for c in s["counts"]], np.concatenate([s["scores"] for s in sets]),
                          np.concatenate([s["labels"] for s in sets]), [len(s["labels"]) for s in sets],
                          gt["counts"], gt["labels"], gt["crowd"], size=(MH, MW))
    expected = [_ours_masks(gt, s) for s in sets]
    np.testing.assert_array_equal(ours, expected)
    for case in range(0, 15, 5):
        assert_ap_equal(ours[case], coco_ap("segm", gt, sets[case], MH, MW), case)


def test_ap_from_ious_is_the_shared_core():
    rng = np.random.default_rng(11)
    for case in range(30):
        gt, dt = random_boxes_case(rng)
        ious, scores, crowd = [], [], []
        for c in np.unique(gt["labels"]):
            g, d = gt["labels"] == c, dt["labels"] == c
            ious.append(box_iou(xyxy_to_xywh(dt["boxes"][d]), xyxy_to_xywh(gt["boxes"][g]), gt["crowd"][g]))
            scores.append(dt["scores"][d])
            crowd.append(gt["crowd"][g])
        np.testing.assert_equal(ap_from_ious(ious, scores, crowd), _ours_boxes(gt, dt), err_msg=f"case {case}")


def test_thresholds_are_cocos():
    from pycocotools.cocoeval import Params

    np.testing.assert_array_equal(COCO_IOU_THRESHOLDS, Params(iouType="bbox").iouThrs)


# ---------------------------------------------------------------------------------------------
# bad input


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"dt_boxes": np.zeros((2, 3))}, r"dt_boxes: expected an \(N, 4\) array"),
        ({"dt_boxes": [[0, 0, 1, np.nan], [0, 0, 1, 1]]}, r"dt_boxes: box 0 .* has NaN or infinity"),
        ({"gt_boxes": [[5, 0, -1, 1]]}, r"gt_boxes: box 0 .* negative width or height; boxes must be COCO's xywh"),
        ({"dt_scores": [0.5]}, r"dt_scores: expected 2 scores"),
        ({"dt_scores": [0.5, np.inf]}, "dt_scores: scores contain NaN"),
        ({"dt_labels": [1.0, 2.0]}, "dt_labels: labels must be integer category ids"),
        ({"gt_crowd": [0, 1]}, r"gt_crowd: expected 1 flags"),
        ({"iou_thresholds": [1.5]}, r"iou_thresholds: need one or more values in \[0, 1\]"),
        ({"max_dets": 0}, "max_dets: need a positive integer"),
    ],
)
def test_bad_box_input_names_the_argument(kwargs, message):
    args = {"dt_boxes": [[0, 0, 1, 1], [0, 0, 2, 2]], "dt_scores": [0.5, 0.4], "dt_labels": [1, 2],
            "gt_boxes": [[0, 0, 1, 1]], "gt_labels": [1], "gt_crowd": None}
    args.update(kwargs)
    with pytest.raises(InputError, match=message):
        image_ap_boxes(**args)


def test_bad_mask_and_batch_input_names_the_argument():
    rle = _encode(np.ones((4, 4), bool))
    with pytest.raises(InputError, match=r"size: expected \(height, width\)"):
        image_ap_masks([rle], [0.5], [1], [rle], [1], size=4)
    with pytest.raises(InputError, match="dt_counts: mask 0 is list, expected a COCO compressed RLE"):
        image_ap_masks([[4, 12]], [0.5], [1], [rle], [1], size=(4, 4))
    with pytest.raises(InputError, match=r"gt_counts: mask 1 has runs that do not cover height x width .* 5x4"):
        image_ap_masks([], [], [], [_encode(np.ones((5, 4), bool)), rle], [1, 1], size=(5, 4))
    with pytest.raises(InputError, match="dt_counts: mask 0 has a character outside"):
        mask_iou(["0 1"], [rle], size=(4, 4))
    with pytest.raises(InputError, match="dt_counts: mask 0 ends inside a count"):
        mask_iou(["0\\"], [rle], size=(4, 4))  # '\\' (44 = 0x2c) says "more follows"
    with pytest.raises(InputError, match="dt_counts: mask 0 has a non-ASCII character"):
        mask_iou(["0é"], [rle], size=(4, 4))
    with pytest.raises(InputError, match=r"dt_scores: expected 1 scores"):
        image_ap_masks([rle], [0.5, 0.1], [1], [rle], [1], size=(4, 4))
    with pytest.raises(InputError, match="set_sizes: they sum to 3 but there are 2 detections"):
        batch_ap_boxes([[0, 0, 1, 1], [0, 0, 1, 1]], [0.1, 0.2], [1, 1], [1, 2], [[0, 0, 1, 1]], [1])
    with pytest.raises(InputError, match="set_sizes: expected non-negative integer sizes"):
        batch_ap_masks([rle], [0.1], [1], [-1, 2], [rle], [1], size=(4, 4))
    with pytest.raises(InputError, match=r"ious\[0\]: shape \(2, 2\) does not match 2 detections x 1"):
        ap_from_ious([np.zeros((2, 2))], [np.zeros(2)], [np.zeros(1, bool)])
