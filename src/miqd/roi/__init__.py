"""ROI masks (stage 2): ground-truth instance masks, existing files, or co-segmentation.

`stage` runs the stage for one shard; `coco_gt` rasterises COCO annotations; `coseg` holds the
co-segmentation steps as pure functions and `features` the ViT that feeds them.
"""

from miqd.roi.coco_gt import instances_mask
from miqd.roi.stage import METHODS, ROI_SCHEMA, mask_stats, run

__all__ = ["METHODS", "ROI_SCHEMA", "instances_mask", "mask_stats", "run"]
