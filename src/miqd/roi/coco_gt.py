"""ROI masks from COCO-format instance annotations: the union of an image's instance masks."""

from __future__ import annotations

import functools

import numpy as np
from pycocotools import mask as mask_utils

from miqd import sources


def instances_mask(anns: list[dict], height: int, width: int) -> np.ndarray:
    """Union of COCO instance segmentations (polygon lists, compressed or uncompressed RLE)."""
    rles = [rle for ann in anns for rle in sources.segmentation_rles(ann["segmentation"], height, width)]
    if not rles:
        return np.zeros((height, width), dtype=bool)
    return mask_utils.decode(mask_utils.merge(rles)).astype(bool)


@functools.lru_cache(maxsize=4)
def coco_index(annotations: str) -> tuple[dict, dict]:
    """(image entry by file name, annotations by image id) of a COCO json."""
    data = sources.read_coco(annotations)
    return {im["file_name"]: im for im in data["images"]}, sources.annotations_by_image(data)
