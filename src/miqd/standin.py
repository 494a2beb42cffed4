"""Empty stand-in files shaped like ImageNet val and COCO val2017, for full-scale dry runs.

`snakemake -n` needs the inputs the DAG names to exist, not their contents; with this tree a
full-scale plan can be inspected (and timed) on a laptop before any data is downloaded. The files
are empty: running the jobs on them fails at once on the first image.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from miqd import config as cfgmod
from miqd.sources import read_imagenet_ground_truth

COCO_IMAGES, COCO_ANNOTATED = 5000, 4952  # val2017: 48 images have no annotation


def make_standin(root: str | Path, template: str | Path = "config/miqd25m.yaml") -> Path:
    """Create the tree under `root` and a copy of `template` pointing at it; return that config."""
    root = Path(root)
    cfg = cfgmod.load(template)
    src = cfg["sources"]

    val = root / "imagenet" / "val"
    val.mkdir(parents=True, exist_ok=True)
    n = len(read_imagenet_ground_truth(src["imagenet"]["ground_truth"]))
    for i in range(1, n + 1):
        (val / src["imagenet"]["filename_template"].format(index=i)).touch()

    coco = root / "coco" / "val2017"
    coco.mkdir(parents=True, exist_ok=True)
    images = []
    for i in range(1, COCO_IMAGES + 1):
        name = f"{i:012d}.jpg"
        (coco / name).touch()
        images.append({"id": i, "file_name": name, "width": 640, "height": 480})
    annotations = [
        {"id": i, "image_id": i, "category_id": 1, "bbox": [0, 0, 10, 10], "area": 100.0,
         "iscrowd": 0, "segmentation": [[0, 0, 10, 0, 10, 10, 0, 10]]}
        for i in range(1, COCO_ANNOTATED + 1)
    ]
    ann_path = root / "coco" / "annotations" / "instances_val2017.json"
    ann_path.parent.mkdir(parents=True, exist_ok=True)
    ann_path.write_text(json.dumps({"images": images, "annotations": annotations,
                                    "categories": [{"id": 1, "name": "person"}]}))
    masks = root / "roi_masks" / "imagenet"
    masks.mkdir(parents=True, exist_ok=True)

    raw = yaml.safe_load(Path(template).read_text())
    raw["outdir"] = str(root / "results")
    raw["sources"]["imagenet"]["images"] = str(val)
    raw["sources"]["coco"]["images"] = str(coco)
    raw["sources"]["coco"]["annotations"] = str(ann_path)
    for dataset, roi in raw.get("roi", {}).items():
        if roi.get("method") == "coco_gt":
            roi["annotations"] = str(ann_path)
        elif roi.get("method") == "files":
            roi["dir"] = str(root / "roi_masks" / dataset)
            (root / "roi_masks" / dataset).mkdir(parents=True, exist_ok=True)
    out = root / f"{Path(template).stem}.standin.yaml"
    out.write_text(yaml.safe_dump(raw, sort_keys=False))
    return out
