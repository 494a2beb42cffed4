"""The select stage: which candidates of a shard become MIQD source images.

Methods (config `select.<dataset>.method`):
- `all`: every candidate (COCO: every annotated val2017 image, as the paper uses).
- `list`: the images named in a file, e.g. the upstream `top_5_quality_images_per_category.csv`
  (columns `Image Name,Category,Quality Score`), which reproduces MIQD-2.5M's published choice
  of 5 images per ImageNet class. Every name in the list must exist in the dataset.

The table has one row per candidate of the shard, `selected` marking the chosen ones, so that
scored selection methods can later record every candidate's score next to the decision.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyarrow as pa

from miqd import sources
from miqd.io import InputError, image_size, write_table

log = logging.getLogger("miqd.select")

SELECT_SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("path", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("class_index", pa.int32()),
        ("class_name", pa.string()),
        ("categories", pa.list_(pa.int32())),
        ("score", pa.float64()),
        ("selected", pa.bool_()),
    ]
)

Method = Callable[[pd.DataFrame, pd.DataFrame, dict], pd.Series]


def _select_all(shard: pd.DataFrame, everything: pd.DataFrame, cfg: dict) -> pd.Series:
    return pd.Series(True, index=shard.index)


def read_name_list(path: str | Path) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"selection list {path} does not exist (select.*.list)")
    lines = path.read_text().splitlines()
    if lines and "Image Name" in lines[0]:
        return [row["Image Name"] for row in csv.DictReader(lines)]
    return [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]


def _select_list(shard: pd.DataFrame, everything: pd.DataFrame, cfg: dict) -> pd.Series:
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


METHODS: dict[str, Method] = {"all": _select_all, "list": _select_list}


def run(config: dict, dataset: str, shard: int, out_path: str) -> pd.DataFrame:
    if dataset not in config["sources"]:
        raise InputError(f"config has no sources.{dataset}")
    src = config["sources"][dataset]
    cfg = config["select"][dataset]
    everything = sources.candidates(dataset, src)
    members = sources.shard_members(dataset, everything, src["shards"], shard)
    selected = METHODS[cfg["method"]](members, everything, cfg)
    sizes = [image_size(p) for p in members["path"]]
    n = len(members)
    table = pd.DataFrame(
        {
            "image_id": members["image_id"],
            "path": members["path"],
            "width": [w for w, _ in sizes],
            "height": [h for _, h in sizes],
            "class_index": members.get("class_index", pd.Series([None] * n)),
            "class_name": members.get("class_name", pd.Series([None] * n)),
            "categories": members.get("categories", pd.Series([None] * n)),
            "score": [None] * n,
            "selected": selected.to_numpy(dtype=bool),
        }
    )
    write_table(out_path, pa.Table.from_pandas(table, schema=SELECT_SCHEMA, preserve_index=False))
    log.info("select %s shard %d: %d candidates, %d selected (method %s)",
             dataset, shard, n, int(table["selected"].sum()), cfg["method"])
    return table
