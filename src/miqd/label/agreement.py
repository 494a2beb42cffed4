"""Per-model agreement scores of distorted images (paper eqs. 1, 3, 7, 8): pure functions.

- cls: consistency `1[top1(x') = top1(x)]`, accuracy `1[top1(x') = gt]`.
- det / ins: COCO AP (box / mask IoU) of the predictions on x' against a reference — the COCO
  ground truth for accuracy, the model's own predictions on x with score >= `reference_score` for
  consistency (`clean_reference`). AP is COCOeval's for that one image (miqd.label.ap).

A reference without any (non-crowd) object has no AP. `empty_reference` decides what such a pair
scores: `agreement` (default) — 1 when the model also finds nothing with score >= reference_score on
x' (it agrees there is nothing), else 0; `exclude` — NaN, left out of the image's MMOS.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from miqd.errors import InputError
from miqd.label import ap

EMPTY_REFERENCE_POLICIES = ("agreement", "exclude")


def cls_consistency(top1: np.ndarray, clean_top1: np.ndarray) -> np.ndarray:
    return (np.asarray(top1) == np.asarray(clean_top1)).astype(np.float64)


def cls_accuracy(top1: np.ndarray, gt: np.ndarray) -> np.ndarray:
    return (np.asarray(top1) == np.asarray(gt)).astype(np.float64)


@dataclass(frozen=True)
class Objects:
    """The objects of one image: predictions (with scores) or a reference (with crowd flags).

    boxes_xywh: COCO's (x, y, width, height) in original-image pixels (predictions stored as xyxy
    are converted as COCO results from them are, w = x2 - x1); labels: COCO category ids;
    masks_rle: COCO compressed RLE counts at `size` = (height, width) (ins only); areas: a
    reference's COCO `area` fields, which the area range applies to (None: from boxes or masks).
    """

    boxes_xywh: np.ndarray
    labels: np.ndarray
    scores: np.ndarray | None = None
    crowd: np.ndarray | None = None
    masks_rle: list | None = None
    size: tuple[int, int] | None = None
    areas: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)


def clean_reference(prediction: Objects, reference_score: float) -> Objects:
    """The consistency reference: a model's clean-image predictions with score >= reference_score."""
    keep = np.flatnonzero(np.asarray(prediction.scores) >= reference_score)
    return Objects(
        boxes_xywh=np.asarray(prediction.boxes_xywh, np.float64).reshape(-1, 4)[keep],
        labels=np.asarray(prediction.labels)[keep],
        crowd=np.zeros(keep.size, bool),
        masks_rle=None if prediction.masks_rle is None else [prediction.masks_rle[i] for i in keep],
        size=prediction.size,
    )


def _has_objects(reference: Objects) -> bool:
    crowd = np.zeros(len(reference), bool) if reference.crowd is None else np.asarray(reference.crowd, bool)
    return bool(len(reference)) and not crowd.all()


def _no_reference_score(prediction: Objects, reference_score: float, policy: str) -> float:
    if policy == "exclude":
        return float("nan")
    return float(not np.any(np.asarray(prediction.scores) >= reference_score))


def detection_scores(predictions: list[Objects], reference: Objects, *, masks: bool,
                     iou_thresholds=ap.COCO_IOU_THRESHOLDS, max_dets: int = 100,
                     reference_score: float = 0.5, empty_reference: str = "agreement") -> np.ndarray:
    """AP of each prediction set against one reference (the 250 distortions of one source).

    `masks` selects mask IoU (ins) over box IoU (det). Returns (len(predictions),) float64.
    """
    if empty_reference not in EMPTY_REFERENCE_POLICIES:
        raise InputError(f"label.empty_reference: {empty_reference!r} is not one of "
                         f"{list(EMPTY_REFERENCE_POLICIES)}")
    crowd = np.zeros(len(reference), bool) if reference.crowd is None else np.asarray(reference.crowd, bool)
    if not _has_objects(reference):
        return np.array([_no_reference_score(p, reference_score, empty_reference) for p in predictions])
    sizes = np.array([len(p) for p in predictions], np.int64)

    def flat(field: str, shape: tuple[int, ...]) -> np.ndarray:
        arrays = [np.asarray(getattr(p, field)).reshape(shape) for p in predictions]
        return np.concatenate(arrays) if arrays else np.zeros((0,) + shape[1:])

    kw = dict(iou_thresholds=iou_thresholds, max_dets=max_dets, gt_area=reference.areas)
    if masks:
        counts = [c for p in predictions for c in p.masks_rle]
        return ap.batch_ap_masks(counts, flat("scores", (-1,)), flat("labels", (-1,)), sizes,
                                 reference.masks_rle, reference.labels, crowd, size=reference.size, **kw)
    return ap.batch_ap_boxes(flat("boxes_xywh", (-1, 4)), flat("scores", (-1,)), flat("labels", (-1,)), sizes,
                             reference.boxes_xywh, reference.labels, crowd, **kw)
