"""The select stage: which candidates of a shard become MIQD source images.

Methods (config `select.<dataset>.method`):
- `all`: every candidate (COCO: every annotated val2017 image, as the paper uses).
- `list`: the images named in a file, e.g. the upstream `top_5_quality_images_per_category.csv`
  (columns `Image Name,Category,Quality Score`), which reproduces MIQD-2.5M's published choice
  of 5 images per ImageNet class. Every name in the list must exist in the dataset.
- `top_k`: the `k` best candidates of each ImageNet class by the combined NR-IQA score (paper
  §4.1: HyperIQA and MANIQA, top 5 per class).

Scoring: when `metrics` are configured (any method), every candidate is decoded once (grayscale,
palette and CMYK converted to RGB, never dropped) and scored by each metric at its own size;
images of the same size are batched. Combining (`combine.rule`), within each group (an ImageNet
class; for COCO the shard's candidates):

- every score is first oriented so that higher is better (lower-better metrics are negated);
- `rank_mean`: each metric's scores become rank percentiles in the group, (rank - 1) / (n - 1)
  with average ranks for ties (1 = best; a group of one image, or all tied, gives 1);
- `minmax_mean`: (s - min) / (max - min) in the group (all equal: 1);
- `raw_mean`: the oriented raw scores, unnormalised (only sensible for metrics on one scale);
- then the weighted mean over metrics (`combine.weights`, default 1 each).

Ranking is by combined score, descending; ties go to the smaller image id; a missing score (NaN,
logged) ranks last. A class with fewer than `k` candidates is an error.

The table has one row per candidate of the shard: size, PIL mode of the file and what decoding
it to 8-bit RGB converts (grey, palette, alpha, 16-bit, float: `miqd.io.decode_image`), labels, every
metric's raw score (`score_<metric>`), the combined `score`, the `rank` in its group and
`selected`.
"""

from __future__ import annotations

import csv
import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from scipy.stats import rankdata

from miqd import nriqa, sources
from miqd.devices import resolve_device
from miqd.errors import InputError
from miqd.plugins import Registry
from miqd.io import conversion, image_size, open_image, read_image, write_table

log = logging.getLogger("miqd.select")

SELECT_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("path", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("mode", pa.string()),  # PIL mode of the file: "L" = grayscale, converted to RGB
        ("conversion", pa.string()),  # what decoding to 8-bit RGB does to it (null: nothing)
        ("class_index", pa.int32()),
        ("class_name", pa.string()),
        ("categories", pa.list_(pa.int32())),
        ("score", pa.float64()),  # combined NR-IQA score (null without metrics)
        ("rank", pa.int32()),  # 1 = best of its group by `score`
        ("selected", pa.bool_()),
    ]
)

COMBINE_RULES = ("rank_mean", "minmax_mean", "raw_mean")

Method = Callable[..., pd.Series]


# ---------------------------------------------------------------------------------------------
# pure maths: combining scores, ranking, top k


def _normalise(values: np.ndarray, rule: str) -> np.ndarray:
    """One metric's oriented scores within one group -> comparable numbers (NaN stays NaN)."""
    out = np.full(values.shape, np.nan)
    ok = ~np.isnan(values)
    v = values[ok]
    if rule == "raw_mean":
        out[ok] = v
    elif v.size and v.max() == v.min():
        out[ok] = 1.0
    elif rule == "rank_mean":
        out[ok] = (rankdata(v, method="average") - 1) / (v.size - 1)
    elif rule == "minmax_mean":
        out[ok] = (v - v.min()) / (v.max() - v.min())
    else:
        raise InputError(f"unknown combine rule {rule!r}; allowed: {', '.join(COMBINE_RULES)}")
    return out


def combine_scores(scores: pd.DataFrame, lower_better: dict[str, bool], groups: pd.Series,
                   rule: str = "rank_mean", weights: dict[str, float] | None = None) -> pd.Series:
    """Combined score per row of `scores` (one column per metric), normalised within `groups`."""
    weights = weights or {}
    w = np.array([float(weights.get(m, 1.0)) for m in scores.columns])
    combined = np.full(len(scores), np.nan)
    group_codes = pd.factorize(groups.to_numpy(), use_na_sentinel=False)[0]
    for g in np.unique(group_codes):
        rows = np.flatnonzero(group_codes == g)
        parts = []
        for m in scores.columns:
            v = scores[m].to_numpy(dtype=np.float64)[rows]
            parts.append(_normalise(-v if lower_better[m] else v, rule))
        combined[rows] = np.stack(parts, axis=1) @ w / w.sum()  # NaN in any metric -> NaN
    return pd.Series(combined, index=scores.index)


def rank_in_groups(score: pd.Series, groups: pd.Series, image_ids: pd.Series) -> pd.Series:
    """1-based rank of each row in its group: score descending, then image id; NaN last."""
    order = pd.DataFrame({"g": groups.to_numpy(), "nan": score.isna().to_numpy(),
                          "neg": -score.fillna(0).to_numpy(), "id": image_ids.to_numpy()},
                         index=score.index)
    order = order.sort_values(["g", "nan", "neg", "id"], kind="stable")
    ranks = order.groupby("g", sort=False, dropna=False).cumcount() + 1
    return ranks.reindex(score.index)


def top_k(rank: pd.Series, k: int) -> pd.Series:
    return rank <= k


# ---------------------------------------------------------------------------------------------
# methods


def _select_all(shard: pd.DataFrame, everything: pd.DataFrame, cfg: dict, rank=None) -> pd.Series:
    return pd.Series(True, index=shard.index)


def read_name_list(path: str | Path) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"selection list {path} does not exist (select.*.list)")
    lines = path.read_text().splitlines()
    if lines and "Image Name" in lines[0]:
        return [row["Image Name"] for row in csv.DictReader(lines)]
    return [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]


def _select_list(shard: pd.DataFrame, everything: pd.DataFrame, cfg: dict, rank=None) -> pd.Series:
    names = read_name_list(cfg["list"])
    known = set(everything["file_name"]) | set(everything["image_id"])
    missing = [n for n in names if n not in known]
    if missing:
        raise InputError(
            f"selection list {cfg['list']} names {len(missing)} images that are not candidates of "
            f"this dataset, e.g. {missing[:3]}; check the list against the source images"
        )
    wanted = set(names)
    return shard["file_name"].isin(wanted) | shard["image_id"].isin(wanted)


def _check_class_sizes(shard: pd.DataFrame, cfg: dict) -> None:
    sizes = shard.groupby("class_index").size()
    short = sizes[sizes < cfg["k"]]
    if len(short):
        c = short.index[0]
        name = shard.loc[shard["class_index"] == c, "class_name"].iloc[0]
        raise InputError(
            f"class {c} ({name}) has {short.iloc[0]} candidate(s), fewer than select k={cfg['k']} "
            f"({len(short)} such class(es) in this shard); check the ground truth and the images, "
            f"or lower select.imagenet.k"
        )


def _select_top_k(shard: pd.DataFrame, everything: pd.DataFrame, cfg: dict, rank=None) -> pd.Series:
    if rank is None:
        raise InputError("select method top_k needs scores: configure select.<dataset>.metrics")
    _check_class_sizes(shard, cfg)
    return top_k(rank, cfg["k"])


METHODS: Registry[Method] = Registry("selection method")
METHODS.add("all", _select_all)
METHODS.add("list", _select_list)
METHODS.add("top_k", _select_top_k)


# ---------------------------------------------------------------------------------------------
# scoring


def _header(path: str) -> tuple[int, int, str]:
    width, height = image_size(path)  # raises InputError for a missing / unreadable file
    with open_image(path) as im:
        return width, height, im.mode


def size_batches(sizes: list[tuple[int, int]], image_ids: list[str], batch_size: int) -> list[list[int]]:
    """Row indices in batches of equal image size, in a fixed order (size, then image id)."""
    order = sorted(range(len(sizes)), key=lambda i: (sizes[i][1], sizes[i][0], image_ids[i]))
    batches: list[list[int]] = []
    for i in order:
        if batches and len(batches[-1]) < batch_size and sizes[batches[-1][0]] == sizes[i]:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


def score_images(paths: list[str], image_ids: list[str], sizes: list[tuple[int, int]],
                 cfg: dict, dataset: str) -> tuple[pd.DataFrame, dict[str, bool]]:
    """Raw scores (one column per metric) of every image; each image is decoded once."""
    import torch

    device = resolve_device(cfg["device"], f"select.{dataset}.device")
    torch.set_num_threads(cfg["threads"])
    metrics = [
        nriqa.create_metric(m["name"], m.get("weights"), device, m.get("options"),
                          key=f"select.{dataset}.metrics[{i}] ({m['name']})")
        for i, m in enumerate(cfg["metrics"])
    ]
    out = {m.name: np.full(len(paths), np.nan) for m in metrics}
    batches = size_batches(sizes, image_ids, cfg["batch_size"])
    start, done = time.perf_counter(), 0
    for b, rows in enumerate(batches):
        arrays = [read_image(paths[i]) for i in rows]
        batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float().div_(255.0)
        for m in metrics:
            out[m.name][rows] = m.scores(batch)
        done += len(rows)
        if b == len(batches) - 1 or (b + 1) % 20 == 0:
            rate = done / max(time.perf_counter() - start, 1e-9)
            log.info("scored %d/%d images (%.2f images/s, %s)", done, len(paths), rate, device)
    table = pd.DataFrame(out)
    for m in metrics:
        bad = np.flatnonzero(np.isnan(out[m.name]))
        if bad.size:
            log.warning("%s gave no score (NaN) for %d image(s), e.g. %s; they rank last",
                        m.name, bad.size, paths[bad[0]])
    return table, {m.name: m.lower_better for m in metrics}


def run(config: dict, dataset: str, shard: int, out_path: str) -> pd.DataFrame:
    if dataset not in config["sources"]:
        raise InputError(f"config has no sources.{dataset}")
    src = config["sources"][dataset]
    cfg = config["select"][dataset]
    everything = sources.candidates(dataset, src)
    members = sources.shard_members(dataset, everything, src["shards"], shard)
    headers = [_header(p) for p in members["path"]]
    n = len(members)
    table = pd.DataFrame(
        {
            "image_id": members["image_id"],
            "path": members["path"],
            "width": [w for w, _, _ in headers],
            "height": [h for _, h, _ in headers],
            "mode": [m for _, _, m in headers],
            "conversion": [conversion(p) for p in members["path"]],
            "class_index": members.get("class_index", pd.Series([None] * n)),
            "class_name": members.get("class_name", pd.Series([None] * n)),
            "categories": members.get("categories", pd.Series([None] * n)),
            "score": [None] * n,
            "rank": [None] * n,
        }
    )
    converted = table["conversion"].notna()
    for note, group in table[converted].groupby("conversion"):
        log.info("%d source(s) decoded with a conversion, %s: e.g. %s", len(group), note, group["path"].iloc[0])
    if cfg["method"] == "top_k":
        _check_class_sizes(members, cfg)  # before hours of scoring, not after
    rank = None
    metric_columns: list[str] = []
    if cfg["metrics"]:
        if n:
            raw, lower_better = score_images(list(members["path"]), list(members["image_id"]),
                                             [(w, h) for w, h, _ in headers], cfg, dataset)
        else:  # an empty shard (more shards than classes) still has the metric columns
            raw = pd.DataFrame({m["name"]: np.zeros(0) for m in cfg["metrics"]})
            lower_better = {m["name"]: nriqa.metric_info(m["name"]).lower_better for m in cfg["metrics"]}
        groups = members["class_index"] if dataset == "imagenet" else pd.Series(0, index=members.index)
        combined = combine_scores(raw, lower_better, groups, cfg["combine"]["rule"],
                                  cfg["combine"]["weights"])
        rank = rank_in_groups(combined, groups, members["image_id"])
        table["score"] = combined.to_numpy()
        table["rank"] = rank.to_numpy()
        for m in raw.columns:
            table[f"score_{m}"] = raw[m].to_numpy()
            metric_columns.append(f"score_{m}")
    method = METHODS.get(cfg["method"], f"select.{dataset}.method")
    table["selected"] = method(members, everything, cfg, rank).to_numpy(dtype=bool)
    schema = SELECT_SCHEMA
    for c in metric_columns:
        schema = schema.append(pa.field(c, pa.float64()))
    write_table(out_path, pa.Table.from_pandas(table[schema.names], schema=schema, preserve_index=False))
    log.info("select %s shard %d: %d candidates, %d selected (method %s%s)",
             dataset, shard, n, int(table["selected"].sum()), cfg["method"],
             f", metrics {', '.join(m['name'] for m in cfg['metrics'])}" if cfg["metrics"] else "")
    return table
