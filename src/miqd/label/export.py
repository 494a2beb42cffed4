"""Labels in the published MIQD-2.5M layout, so MIQA's own data loaders read them unchanged.

- cls: `miqa_cls/labels/<source id>_mmos.csv`, one row per distorted image: `dist_images` (the
  image's path under `images/`, `<id>/<file>`, which MIQA's cls loader joins to `images/`),
  `weighted_consistency`, `weighted_accuracy` (the MMOS), and the unweighted `mean_*` / `std_*` over
  the models.
- det / ins: `miqa_det/labels/<id>_accuracy.csv` and `<id>_consistency.csv` (ins: `miqa_ins/labels/`),
  columns `filename, AP_weighted_avg` (the loaders look for the file in `images/<id>/`). They also
  need `miqa_det/additional_info/instances_val2017.json` (`additional_info`) and
  `src_images/<id>.jpg` (the distort stage writes it, a link where the source is not a JPEG).
- `PROVENANCE.txt` beside them: which models and weights (α, λ) made the labels, and whether any
  had random weights, so an exported folder cannot pass for the published database by mistake.
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from miqd.io import write_text

log = logging.getLogger("miqd.export")

def _csv(frame: pd.DataFrame) -> str:
    buf = io.StringIO()
    frame.to_csv(buf, index=False, float_format="%.6f", lineterminator="\n")
    return buf.getvalue()


def export(task: str, label_paths: list[str], folder: str) -> int:
    """Write the upstream label files of every source in the label tables; returns how many."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    written = 0
    for path in label_paths:
        table = pq.read_table(path).to_pandas()
        names = table["path"].map(lambda p: Path(p).name)
        under_images = table["path"].map(lambda p: p.split("/images/", 1)[1])
        for image_id, rows in table.groupby("image_id", sort=False):
            files = names[rows.index]
            if task == "cls":
                out = pd.DataFrame({"dist_images": under_images[rows.index].to_numpy(),
                                    "weighted_consistency": rows["consistency"].to_numpy(),
                                    "weighted_accuracy": rows["accuracy"].to_numpy()})
                for kind in ("consistency", "accuracy"):
                    per_model = rows[[c for c in rows.columns if c.startswith(f"{kind}/")]].to_numpy(np.float64)
                    out[f"mean_{kind}"] = np.nanmean(per_model, axis=1)
                    out[f"std_{kind}"] = np.nanstd(per_model, axis=1)
                write_text(Path(folder) / f"{image_id}_mmos.csv", _csv(out))
                written += 1
            else:
                for kind in ("accuracy", "consistency"):
                    out = pd.DataFrame({"filename": files.to_numpy(), "AP_weighted_avg": rows[kind].to_numpy()})
                    write_text(Path(folder) / f"{image_id}_{kind}.csv", _csv(out))
                    written += 1
    _provenance(task, label_paths[0], folder)
    log.info("export %s: %d label files in %s", task, written, folder)
    return written


def _provenance(task: str, label_path: str, folder: str) -> None:
    meta = pq.read_schema(label_path).metadata or {}
    alpha = json.loads(meta.get(b"miqd.alpha", b"{}"))
    random = json.loads(meta.get(b"miqd.random_models", b"[]"))
    lam = json.loads(meta.get(b"miqd.lambda", b"null"))
    lines = [f"MMOS labels of task {task}, made by miqd (label tables under label/{task}/).",
             f"lambda (composite = lambda * consistency + (1 - lambda) * accuracy): {lam}",
             "models and their weights alpha:"] + [f"  {m}: {a:.6f}" for m, a in alpha.items()]
    lines.append("The files hold consistency and accuracy; MIQA's data loaders compute the composite themselves "
                 "as 0.5 * consistency + 0.5 * accuracy" + (
                     "." if lam == 0.5 else
                     f", not with this run's lambda {lam}: their composite differs from miqd's label tables."))
    if random:
        lines.append(f"WARNING: models {', '.join(random)} had RANDOM weights: these labels are NOT real.")
    write_text(Path(folder) / "PROVENANCE.txt", "\n".join(lines) + "\n")


def additional_info(annotations: str, out_path: str) -> None:
    """The COCO annotations the labels were made with, where MIQA's det/ins loaders read them."""
    from miqd.sources import read_coco

    read_coco(annotations)  # a valid COCO file, or a clear error
    write_text(out_path, Path(annotations).read_text())

