"""The split stage: train / val by source image (paper §6.1), so no content leaks between them.

Rules (val share f = `split.val_fraction`, 0.2 = MIQD-2.5M's 4:1):
- cls: per class, round(n·f) of its n sources go to val (4 + 1 for the 5 sources of an ImageNet class).
  Classes too small to give one val source (n·f < 0.5) are pooled and the pool is split by the same
  rule, so the demo's one-source classes still give a val set.
- coco (det and ins share it): images whose objects are all of one category are split per category
  as above; then every multi-category image goes, one at a time, to the split that most needs its
  categories — the larger of Σ_c (target_c − count_c) / total_c over the image's categories, where
  target_c is the split's share of the images that contain c. Finally single images move between the
  splits until val holds exactly round(N·f), each time the one whose move best serves the receiving
  split's needs.
Which members of a group go to val is a seeded shuffle keyed by (seed, dataset, group) over sorted
ids, so the split does not depend on shard count or order. Ties break by image id.

The balance report lists every class's train fraction and its deviation from 1 − f.
"""

from __future__ import annotations

import csv
import io
import logging
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from miqd.errors import InputError
from miqd.io import read_table, write_table, write_text
from miqd.models.coco import COCO_CATEGORIES
from miqd.seeding import rng_for

log = logging.getLogger("miqd.split")

SPLIT_SCHEMA = pa.schema([
    ("image_id", pa.string()),
    ("split", pa.string()),
    ("path", pa.string()),
    ("class_index", pa.int32()),
    ("class_name", pa.string()),
    ("categories", pa.list_(pa.int32())),
    ("score", pa.float64()),
])


def _n_val(n: int, val_fraction: float) -> int:
    return int(np.floor(n * val_fraction + 0.5))


def _pick_val(ids: list[str], n_val: int, seed: int, dataset: str, group: object) -> set[str]:
    order = rng_for(seed, "split", dataset, group).permutation(len(ids))
    return {sorted(ids)[i] for i in order[:n_val]}


def stratified(groups: dict[object, list[str]], val_fraction: float, seed: int, dataset: str) -> dict[str, str]:
    """{image id: split} for images grouped by one stratum each (class), small groups pooled."""
    out: dict[str, str] = {}
    pool: list[str] = []
    for group in sorted(groups, key=str):
        ids = sorted(groups[group])
        n_val = _n_val(len(ids), val_fraction)
        if n_val == 0:
            pool.extend(ids)
            continue
        val = _pick_val(ids, n_val, seed, dataset, group)
        out.update({i: "val" if i in val else "train" for i in ids})
    if pool:
        val = _pick_val(pool, _n_val(len(pool), val_fraction), seed, dataset, "pooled small classes")
        out.update({i: "val" if i in val else "train" for i in pool})
    return out


def split_cls(classes: dict[str, int], val_fraction: float, seed: int, dataset: str = "imagenet") -> dict[str, str]:
    groups: dict[int, list[str]] = defaultdict(list)
    for image_id, c in classes.items():
        groups[c].append(image_id)
    return stratified(groups, val_fraction, seed, dataset)


def split_multilabel(categories: dict[str, list[int]], val_fraction: float, seed: int,
                     dataset: str = "coco") -> dict[str, str]:
    """COCO: single-category images stratified, multi-category images greedily, then exact size."""
    single = {i: c[0] for i, c in categories.items() if len(set(c)) == 1}
    out = split_cls(single, val_fraction, seed, dataset)
    total: dict[int, int] = defaultdict(int)
    for cats in categories.values():
        for c in set(cats):
            total[c] += 1
    share = {"train": 1.0 - val_fraction, "val": val_fraction}
    count = {s: defaultdict(int) for s in share}
    for image_id, s in out.items():
        count[s][single[image_id]] += 1

    def need(split: str, cats) -> float:
        return sum((share[split] * total[c] - count[split][c]) / total[c] for c in set(cats))

    multi = sorted(i for i in categories if i not in single)
    order = rng_for(seed, "split", dataset, "multi-category order").permutation(len(multi))
    sizes = {s: sum(1 for v in out.values() if v == s) for s in share}
    for k in order:
        image_id = multi[k]
        cats = categories[image_id]
        gap = {s: share[s] * (sizes["train"] + sizes["val"] + 1) - sizes[s] for s in share}
        split = max(share, key=lambda s: (round(need(s, cats), 12), round(gap[s], 12), s == "train"))
        out[image_id] = split
        sizes[split] += 1
        for c in set(cats):
            count[split][c] += 1

    target_val = _n_val(len(categories), val_fraction)
    while sizes["val"] != target_val:
        src, dst = ("train", "val") if sizes["val"] < target_val else ("val", "train")
        best = min((i for i, s in out.items() if s == src),
                   key=lambda i: (-round(need(dst, categories[i]) - need(src, categories[i]), 12), i))
        out[best] = dst
        sizes[src] -= 1
        sizes[dst] += 1
        for c in set(categories[best]):
            count[src][c] -= 1
            count[dst][c] += 1
    return out


def balance(assignment: dict[str, str], categories: dict[str, list[int]], val_fraction: float,
            names: dict[int, str] | None = None) -> pd.DataFrame:
    """Per class: images, train, val, train fraction and its deviation from 1 − val_fraction."""
    rows: dict[int, dict] = {}
    for image_id, cats in categories.items():
        for c in set(cats):
            r = rows.setdefault(c, {"class": c, "name": (names or {}).get(c, ""), "images": 0, "train": 0, "val": 0})
            r["images"] += 1
            r[assignment[image_id]] += 1
    table = pd.DataFrame(sorted(rows.values(), key=lambda r: r["class"]),
                         columns=["class", "name", "images", "train", "val"])
    table["train_fraction"] = table["train"] / table["images"]
    table["deviation"] = table["train_fraction"] - (1.0 - val_fraction)
    return table


def run(dataset: str, select_paths: list[str], val_fraction: float, seed: int, out_path: str,
        balance_path: str, upstream: dict[str, str]) -> pd.DataFrame:
    """Split the dataset's selected sources; write the split table, balance report and upstream CSVs."""
    frames = [read_table(p) for p in select_paths]
    sel = pd.concat(frames, ignore_index=True)
    sel = sel[sel["selected"]].sort_values("image_id", kind="stable").reset_index(drop=True)
    if sel.empty:
        raise InputError(f"no selected sources in {select_paths}; nothing to split")
    if dataset == "imagenet":
        if sel["class_index"].isna().any():
            raise InputError(f"{dataset}: sources without a class in {select_paths}")
        cats = {i: [int(c)] for i, c in zip(sel.image_id, sel.class_index, strict=True)}
        assignment = split_cls({i: c[0] for i, c in cats.items()}, val_fraction, seed, dataset)
        names = dict(zip(sel.class_index.astype(int), sel.class_name, strict=True))
    else:
        cats = {i: [int(c) for c in cs] for i, cs in zip(sel.image_id, sel.categories, strict=True)}
        empty = [i for i, c in cats.items() if not c]
        if empty:
            raise InputError(f"{dataset}: sources {empty[:3]} have no annotated category; the COCO split "
                             f"stratifies by category (sources.coco.annotations)")
        assignment = split_multilabel(cats, val_fraction, seed, dataset)
        names = dict(COCO_CATEGORIES)
    table = pd.DataFrame({
        "image_id": sel.image_id,
        "split": [assignment[i] for i in sel.image_id],
        "path": sel.path,
        "class_index": sel.class_index if dataset == "imagenet" else None,
        "class_name": sel.class_name if dataset == "imagenet" else None,
        "categories": None if dataset == "imagenet" else [cats[i] for i in sel.image_id],
        "score": sel["score"] if "score" in sel else None,
    })
    write_table(out_path, pa.Table.from_pandas(table, schema=SPLIT_SCHEMA, preserve_index=False))
    report = balance(assignment, cats, val_fraction, names)
    write_text(balance_path, report.to_csv(index=False, float_format="%.4f"))
    _write_upstream(dataset, table, upstream)
    n_val = int((table["split"] == "val").sum())
    worst = report.loc[report["deviation"].abs().idxmax()]
    log.info("split %s: %d sources, %d train / %d val; %d classes, worst train fraction %.3f (class %s, %d images)",
             dataset, len(table), len(table) - n_val, n_val, len(report), worst.train_fraction, worst["class"],
             worst.images)
    return table


def _write_upstream(dataset: str, table: pd.DataFrame, paths: dict[str, str]) -> None:
    """The upstream formats: cls `Image Name,Category,Quality Score`; COCO `Image Index`."""
    for split, path in paths.items():
        part = table[table["split"] == split]
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        if dataset == "imagenet":
            writer.writerow(["Image Name", "Category", "Quality Score"])
            for row in part.itertuples():
                score = "" if row.score is None or pd.isna(row.score) else f"{row.score:.8g}"
                writer.writerow([Path(row.path).name, row.class_name, score])
        else:
            writer.writerow(["Image Index"])
            for image_id in part.image_id:
                writer.writerow([int(image_id)])
        write_text(path, buf.getvalue())
