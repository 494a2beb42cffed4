"""Labels and splits exported in the published MIQD-2.5M layout read back as the same samples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from miqd import layout
from miqd.io import write_table
from miqd.label import split
from miqd.label.export import export
from miqd.select import SELECT_SCHEMA
from miqd.train.data import pipeline_samples, published_samples

SOURCES = {"cls": ["ILSVRC2012_val_00000007", "ILSVRC2012_val_00000011", "ILSVRC2012_val_00000012",
                   "ILSVRC2012_val_00000020", "ILSVRC2012_val_00000031"],
           "det": [f"{i:012d}" for i in (9, 25, 30, 34, 36)]}
PAIRS = [(1, 1), (5, 1), (2, 4)]


def _label_table(task: str, ids: list[str]) -> pd.DataFrame:
    folder = "miqa_cls" if task == "cls" else "miqa_det"
    rng = np.random.default_rng(0)
    rows = []
    for image_id in ids:
        for corruption in ("jpeg_compression", "gaussian_noise"):
            for r, b in PAIRS:
                name = layout.distorted_name(image_id, corruption, r, b)
                c, a = rng.random(2)
                rows.append(dict(image_id=image_id, corruption=corruption, roi_level=r, bg_level=b,
                                 region_type=layout.region_type(r, b), path=f"{folder}/images/{image_id}/{name}",
                                 psnr=30.0, ssim=0.9, consistency=c, accuracy=a, composite=(c + a) / 2,
                                 **{"consistency/m1": c, "accuracy/m1": a}))
    return pd.DataFrame(rows)


@pytest.mark.parametrize("task", ["cls", "det", "ins"])
def test_exported_labels_and_splits_read_back_as_the_pipelines_samples(tmp_path, task):
    dataset = layout.TASK_DATASET[task]
    ids = SOURCES["cls" if task == "cls" else "det"]
    outdir = str(tmp_path / "out")
    labels = layout.label_table(outdir, task, "000")
    table = pa.Table.from_pandas(_label_table(task, ids), preserve_index=False)
    write_table(labels, table.replace_schema_metadata({"miqd.alpha": '{"m1": 1.0}', "miqd.lambda": "0.5",
                                                       "miqd.random_models": '["m1"]'}))
    select = [dict(image_id=i, path=f"/data/{i}.JPEG" if task == "cls" else f"/data/{i}.jpg", width=10,
                   height=10, class_index=3 if task == "cls" else None,
                   class_name="sea snake" if task == "cls" else None, categories=None if task == "cls" else [1],
                   score=0.5, selected=True) for i in ids]
    write_table(tmp_path / "select.parquet", pa.Table.from_pylist(select, schema=SELECT_SCHEMA))
    upstream = layout.split_upstream(outdir, dataset)
    split.run(dataset, [str(tmp_path / "select.parquet")], 0.2, 0, layout.split_table(outdir, dataset),
              layout.split_balance(outdir, dataset), upstream)
    folder = layout.label_export_dir(outdir, task)
    assert export(task, [labels], folder) == (5 if task == "cls" else 10)
    for rel in _label_table(task, ids)["path"]:  # the images and source copies the distort stage writes
        (tmp_path / "out" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "out" / rel).write_bytes(b"")
    for row in select:
        src = tmp_path / "out" / layout.source_copy_relpath(dataset, row["image_id"], Path(row["path"]).suffix)
        src.parent.mkdir(parents=True, exist_ok=True)
        src.write_bytes(b"")

    ours = pipeline_samples(outdir, task, ["000"])
    published = published_samples(task, outdir, str(tmp_path / "out" / "split"))
    keys = ["path", "image_id", "corruption", "roi_level", "bg_level", "region_type", "split"]
    pd.testing.assert_frame_equal(ours[keys], published[keys])
    for label in ("consistency", "accuracy", "composite"):
        np.testing.assert_allclose(ours[label], published[label], atol=1e-6)
    assert (published["split"] == "val").sum() == len(PAIRS) * 2  # one of the five sources
    provenance = (Path(folder) / "PROVENANCE.txt").read_text()
    assert f"MMOS labels of task {task}" in provenance and "m1: 1.000000" in provenance
    assert "models m1 had RANDOM weights: these labels are NOT real" in provenance
