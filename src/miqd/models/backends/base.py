"""What every backend returns, and the pieces they share.

A `Predictor` turns a batch of decoded RGB uint8 images (any sizes) into one dict per image:
- cls: `top5_ids` (ImageNet-1k indices), `top5_probs`;
- det: `boxes_xyxy` (N, 4) float32 in original-image pixels, `scores` (N,), `labels` (N,) COCO ids;
- ins: the same plus `masks_rle`: COCO compressed RLE strings at the original image size.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping

import numpy as np

from miqd.devices import autocast
from miqd.errors import InputError
from miqd.models.coco import ALIASES, COCO_CATEGORIES, COCO_ID_BY_NAME, COCO_IDS
from miqd.models.registry import ModelSpec


class Predictor(ABC):
    def __init__(self, spec: ModelSpec, device: str, precision: str = "fp32"):
        self.spec = spec
        self.device = device
        self.precision = precision

    @abstractmethod
    def predict(self, images: list[np.ndarray]) -> list[dict]:
        """One prediction dict per image (see the module docstring)."""

    def autocast(self):
        return autocast(self.device, self.precision)


def coco_label_lookup(spec: ModelSpec, names: Mapping[int, str]) -> dict[int, int]:
    """{model class index: COCO id} from the registry's label_map, else by class name."""
    if spec.label_map == "coco80":
        if len(names) != 80:
            raise InputError(f"model {spec.id!r}: label_map coco80 needs 80 classes, the model has {len(names)}")
        return {int(i): COCO_CATEGORIES[int(i)][0] for i in names}
    lookup = {}
    unmapped = []
    for index, name in names.items():
        key = str(name)
        if isinstance(spec.label_map, dict) and (key in spec.label_map or str(index) in spec.label_map):
            coco_id = spec.label_map.get(key, spec.label_map.get(str(index)))
        else:
            coco_id = COCO_ID_BY_NAME.get(ALIASES.get(key.lower(), key.lower()))
        if coco_id is None or coco_id not in COCO_IDS:
            unmapped.append(key)
        else:
            lookup[int(index)] = coco_id
    if unmapped:
        raise InputError(
            f"model {spec.id!r}: {len(unmapped)} of its classes have no COCO category, e.g. "
            f"{unmapped[:5]}; add label_map to its registry entry ({{name: COCO id}}, or coco80)"
        )
    return lookup


def masks_to_rle(masks: np.ndarray) -> list[str]:
    """(N, H, W) boolean masks to COCO compressed RLE strings."""
    from pycocotools import mask as mask_utils

    if len(masks) == 0:
        return []
    encoded = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    return [e["counts"].decode("ascii") for e in encoded]


def empty_detection(task: str) -> dict:
    out = {"boxes_xyxy": np.zeros((0, 4), np.float32), "scores": np.zeros(0, np.float32),
           "labels": np.zeros(0, np.int16)}
    if task == "ins":
        out["masks_rle"] = []
    return out


def detection(task: str, boxes, scores, labels, masks=None, keep=None) -> dict:
    """A det/ins prediction from arrays, keeping the rows `keep` (a boolean mask) if given."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    scores = np.asarray(scores, np.float32).reshape(-1)
    labels = np.asarray(labels, np.int16).reshape(-1)
    if keep is not None:
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        if masks is not None:
            masks = masks[keep]
    out = {"boxes_xyxy": boxes, "scores": scores, "labels": labels}
    if task == "ins":
        out["masks_rle"] = masks_to_rle(np.asarray(masks, bool)) if masks is not None else []
    return out
