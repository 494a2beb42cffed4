"""A tiny export in the published layout, made by miqd's own export code from small label tables.

`build(out)` writes label tables, split tables and what the label and split stages export from them:
the label CSVs, the upstream split CSVs, the COCO annotations under additional_info/, and (empty)
distorted images and source copies where MIQA's loaders look for them. Its exported part is
committed as tests/fixtures/miqa/export/ (tests/conformance/make_miqa_fixtures.py): the default
suite checks miqd still writes exactly that, the conformance suite that MIQA's loaders read it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from miqd import layout
from miqd.io import write_table
from miqd.label import split
from miqd.label.export import additional_info, export
from miqd.select import SELECT_SCHEMA

IDS = {"imagenet": ["ILSVRC2012_val_00000007", "ILSVRC2012_val_00000011", "ILSVRC2012_val_00000020"],
       "coco": [f"{i:012d}" for i in (9, 25, 30)]}
CORRUPTIONS = ("jpeg_compression", "gaussian_noise")
PAIRS = [(1, 1), (3, 3), (5, 5), (4, 1), (1, 4)]
EXPORTED = ("miqa_cls", "miqa_det", "miqa_ins", "split")


def label_table(task: str, ids: list[str]) -> pd.DataFrame:
    folder = layout.DATASET_FOLDER[layout.TASK_DATASET[task]]
    rng = np.random.default_rng({"cls": 0, "det": 1, "ins": 2}[task])
    rows = []
    for image_id in ids:
        for corruption in CORRUPTIONS:
            for r, b in PAIRS:
                name = layout.distorted_name(image_id, corruption, r, b)
                c1, c2, a1, a2 = rng.random(4)
                c, a = (c1 + c2) / 2, (a1 + a2) / 2
                rows.append(dict(image_id=image_id, corruption=corruption, roi_level=r, bg_level=b,
                                 region_type=layout.region_type(r, b), path=f"{folder}/images/{image_id}/{name}",
                                 psnr=30.0, ssim=0.9, consistency=c, accuracy=a, composite=(c + a) / 2,
                                 **{"consistency/m1": c1, "consistency/m2": c2, "accuracy/m1": a1,
                                    "accuracy/m2": a2}))
    return pd.DataFrame(rows)


def coco_annotations(path: Path) -> None:
    ids = [int(i) for i in IDS["coco"]]
    path.write_text(json.dumps({
        "images": [{"id": i, "file_name": f"{i:012d}.jpg", "width": 64, "height": 48} for i in ids],
        "annotations": [{"id": k + 1, "image_id": i, "category_id": 1 + k % 2, "bbox": [4, 4, 20, 16], "area": 320,
                         "iscrowd": 0} for k, i in enumerate(ids)],
        "categories": [{"id": 1, "name": "person"}, {"id": 2, "name": "dog"}]}, sort_keys=True))


def build(out: Path) -> Path:
    """The tiny pipeline output under `out`; returns the COCO annotations file it was made with."""
    outdir = str(out)
    ann = out.parent / f"{out.name}.instances.json"
    coco_annotations(ann)
    for task in ("cls", "det", "ins"):
        dataset = layout.TASK_DATASET[task]
        table = pa.Table.from_pandas(label_table(task, IDS[dataset]), preserve_index=False)
        path = layout.label_table(outdir, task, "000")
        write_table(path, table.replace_schema_metadata({"miqd.alpha": '{"m1": 0.6, "m2": 0.4}',
                                                         "miqd.lambda": "0.5", "miqd.random_models": "[]"}))
        export(task, [path], layout.label_export_dir(outdir, task))
        for rel in label_table(task, IDS[dataset])["path"]:  # where the distort stage writes the images
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            (out / rel).write_bytes(b"")
    additional_info(str(ann), layout.additional_info(outdir))
    for dataset, ids in IDS.items():
        suffix = ".JPEG" if dataset == "imagenet" else ".jpg"
        select = [dict(image_id=i, path=f"/data/{i}{suffix}", width=64, height=48,
                       class_index=3 + k if dataset == "imagenet" else None,
                       class_name=["sea snake", "goldfish", "sea snake"][k] if dataset == "imagenet" else None,
                       categories=None if dataset == "imagenet" else [1 + k % 2], score=0.5, selected=True)
                  for k, i in enumerate(ids)]
        select_path = out / "select" / f"{dataset}.parquet"
        write_table(select_path, pa.Table.from_pylist(select, schema=SELECT_SCHEMA))
        split.run(dataset, [str(select_path)], 1 / 3, 0, layout.split_table(outdir, dataset),
                  layout.split_balance(outdir, dataset), layout.split_upstream(outdir, dataset))
        for image_id in ids:
            src = out / layout.source_copy_relpath(dataset, image_id, suffix)
            src.parent.mkdir(parents=True, exist_ok=True)
            src.write_bytes(b"")
    return ann


def exported_files(out: Path) -> dict[str, bytes]:
    """The exported part of a build (what MIQA reads), by relative path."""
    files = {}
    for top in EXPORTED:
        for p in sorted((out / top).rglob("*")):
            if p.is_file() and p.suffix not in (".parquet",) and not p.name.endswith(".balance.csv"):
                files[p.relative_to(out).as_posix()] = p.read_bytes()
    return files
