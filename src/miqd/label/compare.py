"""Regenerated vs published labels: how close a rebuilt MIQD-2.5M is to the one the authors published.

The same distorted image (source id and file name) has a label in our label tables and one in the
published download; agreement is SRCC and PLCC (linear: both are labels on one scale) per task and
label type, and within each corruption and region type. The composite is recomputed from the
published consistency and accuracy with the λ our labels were made with, so the two are alike.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from miqd import layout
from miqd.errors import InputError
from miqd.io import write_text
from miqd.wording import plural
from miqd.correlation import plcc, srcc

log = logging.getLogger("miqd.compare")

LABELS = ("consistency", "accuracy", "composite")
GROUPS = ("all", "corruption", "region_type")
KEY = ["image_id", "name"]


# ---------------------------------------------------------------------------------------------
# pure


def join(ours: pd.DataFrame, published: pd.DataFrame, lam: float) -> pd.DataFrame:
    """Our rows beside the published labels of the same images (`<label>` and `published_<label>`)."""
    pub = published.assign(composite=lam * published["consistency"] + (1 - lam) * published["accuracy"])
    pub = pub.rename(columns={k: f"published_{k}" for k in LABELS})
    return ours.merge(pub[KEY + [f"published_{k}" for k in LABELS]], on=KEY, how="inner", validate="one_to_one")


def agreement(joined: pd.DataFrame, task: str) -> pd.DataFrame:
    """SRCC / PLCC of ours vs published per label type: over all images, per corruption, per region type."""
    rows = []
    for by in GROUPS:
        parts = [("all", joined)] if by == "all" else sorted(joined.groupby(by), key=lambda kv: str(kv[0]))
        for group, part in parts:
            for label in LABELS:
                ok = part[label].notna() & part[f"published_{label}"].notna()
                x, y = part.loc[ok, label].to_numpy(), part.loc[ok, f"published_{label}"].to_numpy()
                rows.append({"task": task, "label": label, "by": by, "group": str(group), "n": int(ok.sum()),
                             "srcc": srcc(x, y) if ok.sum() > 2 else np.nan,
                             "plcc": plcc(x, y) if ok.sum() > 2 else np.nan,
                             "mean_diff": float(np.mean(x - y)) if ok.any() else np.nan})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# reading


def our_labels(outdir: str, task: str) -> tuple[pd.DataFrame, float]:
    """Every label shard of `task` under `outdir`, and the λ its composite was made with."""
    paths = sorted((Path(outdir) / "label" / task).glob("shard-*.parquet"))
    if not paths:
        raise InputError(f"no label tables of task {task} under {Path(outdir) / 'label' / task}; "
                         f"run the label stage first (snakemake labelled)")
    cols = ["image_id", "path", "corruption", "roi_level", "bg_level", "region_type", *LABELS]
    frame = pd.concat([pq.read_table(p, columns=cols).to_pandas() for p in paths], ignore_index=True)
    lam = json.loads((pq.read_schema(paths[0]).metadata or {}).get(b"miqd.lambda", b"0.5"))
    frame["name"] = frame["path"].map(lambda p: Path(p).name)
    return frame, float(lam)


def published_labels(root: str, task: str, image_ids: list[str]) -> tuple[pd.DataFrame, list[str]]:
    """The published labels of those sources that have them; and the ids that have none."""
    from miqd.train.data import PUBLISHED_FOLDERS, published_labels as read_one

    labels_dir = Path(root) / PUBLISHED_FOLDERS[task][1] / "labels"
    if not labels_dir.is_dir():
        raise InputError(f"{labels_dir} does not exist; --published (compare.published) must be the MIQD-2.5M "
                         f"root, holding miqa_cls/, miqa_det/ and miqa_ins/")
    frames, missing = [], []
    for image_id in image_ids:
        first = labels_dir / (f"{image_id}_mmos.csv" if task == "cls" else f"{image_id}_accuracy.csv")
        if not first.is_file():
            missing.append(image_id)
            continue
        frame = read_one(task, labels_dir, image_id)
        frames.append(frame.assign(image_id=image_id, name=[Path(n).name for n in frame["name"]]))
    if not frames:
        return pd.DataFrame(columns=["image_id", "name", "consistency", "accuracy"]), missing
    return pd.concat(frames, ignore_index=True)[["image_id", "name", "consistency", "accuracy"]], missing


# ---------------------------------------------------------------------------------------------
# the command


def compare(outdir: str, published_root: str, tasks: list[str]) -> pd.DataFrame:
    """Write compare/labels.{csv,md,png} under `outdir`; returns the agreement table."""
    from miqd.plots import label_agreement_figure

    tables, joined_by_task, notes = [], {}, []
    for task in tasks:
        ours, lam = our_labels(outdir, task)
        ids = list(dict.fromkeys(ours["image_id"]))
        pub, missing = published_labels(published_root, task, ids)
        joined = join(ours, pub, lam)
        if joined.empty:
            raise InputError(f"task {task}: none of our {len(ours)} images has a published label under "
                             f"{published_root} (e.g. source {ids[0]}); compare a regenerated MIQD-2.5M "
                             f"with the download it regenerates")
        unmatched = len(ours) - len(joined)
        notes.append(f"{task}: {len(joined)} of our {len(ours)} images have a published label"
                     + (f"; no published label file for {plural(len(missing), 'source')} (e.g. {missing[0]})"
                        if missing else "")
                     + (f"; {plural(unmatched, 'image')} not in the published files" if unmatched else ""))
        log.info("compare %s: %s", task, notes[-1])
        joined_by_task[task] = joined
        tables.append(agreement(joined, task))
    table = pd.concat(tables, ignore_index=True)
    out = layout.compare_outputs(outdir)
    write_text(out["csv"], table.to_csv(index=False, float_format="%.6g"))
    overall = table[table["by"] == "all"]
    lines = ["# Regenerated vs published labels", "", f"Published: {published_root}", ""]
    lines += [f"- {n}" for n in notes] + ["", "| task | label | n | SRCC | PLCC | mean diff |", "|---|---|---|---|---|---|"]
    lines += [f"| {r.task} | {r.label} | {r.n} | {r.srcc:.4f} | {r.plcc:.4f} | {r.mean_diff:+.4f} |"
              for r in overall.itertuples()]
    write_text(out["md"], "\n".join(lines) + "\n")
    label_agreement_figure(joined_by_task, table, out["png"])
    return table

