"""Training and evaluation samples: one table, two readers, one torch Dataset.

Both the workflow's own outputs (label shards + split table) and the published MIQD-2.5M download
(images/, labels/, src_images/ and the upstream split CSVs) become the same sample table:

    path  image_id  task  corruption  roi_level  bg_level  region_type  consistency  accuracy
    composite  split  psnr  ssim  src_path

`path` is absolute. psnr/ssim are NaN where the source does not give them (the published labels);
`src_path` (the undistorted source) is known for both. The Dataset reads rows of that table.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from miqd import layout
from miqd.errors import InputError
from miqd.io import read_image, read_table
from miqd.seeding import rng_for
from miqd.train.transforms import Preprocess

LABELS = ("composite", "consistency", "accuracy")
SAMPLE_COLUMNS = ["path", "image_id", "task", "corruption", "roi_level", "bg_level", "region_type",
                  "consistency", "accuracy", "composite", "split", "psnr", "ssim", "src_path"]
_LABEL_COLUMNS = ["image_id", "corruption", "roi_level", "bg_level", "region_type", "path",
                  "psnr", "ssim", "consistency", "accuracy", "composite"]


def _finish(df: pd.DataFrame, task: str) -> pd.DataFrame:
    df = df.assign(task=task)
    for col in ("psnr", "ssim"):
        if col not in df:
            df[col] = np.nan
    df = df[SAMPLE_COLUMNS].astype({"roi_level": "int64", "bg_level": "int64", "consistency": "float64",
                                    "accuracy": "float64", "composite": "float64", "psnr": "float64",
                                    "ssim": "float64"})
    return df.sort_values(["image_id", "corruption", "roi_level", "bg_level"], kind="mergesort").reset_index(drop=True)


# ---------------------------------------------------------------------------------------------
# the workflow's own outputs


def pipeline_samples(outdir: str, task: str, shards: list[str]) -> pd.DataFrame:
    """Samples of `task` from its label shards and its dataset's split table."""
    dataset = layout.TASK_DATASET[task]
    frames = []
    for shard in shards:
        path = layout.label_table(outdir, task, shard)
        table = read_table(path)
        missing = [c for c in _LABEL_COLUMNS if c not in table.columns]
        if missing:
            raise InputError(f"label table {path} lacks columns {', '.join(missing)}; rerun the label stage")
        frames.append(table[_LABEL_COLUMNS])
    if not frames:
        raise InputError(f"no label shards for task {task} (sources.{dataset}.shards)")
    labels = pd.concat(frames, ignore_index=True)
    split_path = layout.split_table(outdir, dataset)
    split = read_table(split_path)
    for col in ("image_id", "split", "path"):
        if col not in split.columns:
            raise InputError(f"split table {split_path} lacks column {col!r}; rerun the split stage")
    split = split[["image_id", "split", "path"]].rename(columns={"path": "src_path"})
    df = labels.merge(split, on="image_id", how="left")
    unsplit = sorted(df.loc[df["split"].isna(), "image_id"].unique())
    if unsplit:
        raise InputError(f"split table {split_path} has no split for {len(unsplit)} labelled source(s), "
                         f"e.g. {', '.join(unsplit[:3])}; rerun the split stage")
    root = Path(outdir)
    df["path"] = [str(root / p) for p in df["path"]]
    df["src_path"] = df["src_path"].astype(str)
    return _finish(df, task)


# ---------------------------------------------------------------------------------------------
# the published MIQD-2.5M layout (docs/interop.md, "The layout")

PUBLISHED_FOLDERS = {"cls": ("miqa_cls", "miqa_cls"), "det": ("miqa_det", "miqa_det"), "ins": ("miqa_det", "miqa_ins")}
_SPLIT_CSV = {"cls": "miqa_cls_{split}.csv", "det": "miqa_det_{split}.csv", "ins": "miqa_det_{split}.csv"}
def _read_csv(path: Path, columns: list[str], fix: str) -> pd.DataFrame:
    if not path.is_file():
        raise InputError(f"{path} does not exist; {fix}")
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as err:
        raise InputError(f"{path} cannot be read as CSV ({err})") from None
    df.columns = [c.strip() for c in df.columns]
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise InputError(f"{path} lacks columns {', '.join(missing)} (has {', '.join(df.columns)}); {fix}")
    return df


def published_split(task: str, splits_dir: str) -> pd.DataFrame:
    """image_id -> split from the upstream split CSVs (cls by `Image Name`, det/ins by `Image Index`)."""
    rows = []
    for split in ("train", "val"):
        path = Path(splits_dir) / _SPLIT_CSV[task].format(split=split)
        fix = "point train.published.splits at the folder holding the upstream split CSVs"
        if task == "cls":
            df = _read_csv(path, ["Image Name"], fix)
            ids = [Path(str(n).strip()).stem for n in df["Image Name"]]
        else:
            df = _read_csv(path, ["Image Index"], fix)
            ids = [f"{int(n):012d}" for n in df["Image Index"]]
        rows.append(pd.DataFrame({"image_id": ids, "split": split}))
    out = pd.concat(rows, ignore_index=True)
    both = out.loc[out["image_id"].duplicated(keep=False), "image_id"].unique()
    if len(both):
        raise InputError(f"{splits_dir}: {len(both)} image(s) are in both the train and val CSVs of "
                         f"{task}, e.g. {both[0]}")
    return out


def published_labels(task: str, labels_dir: Path, image_id: str) -> pd.DataFrame:
    """Per-image labels of one source as (name, consistency, accuracy)."""
    if task == "cls":
        path = labels_dir / f"{image_id}_mmos.csv"
        df = _read_csv(path, ["dist_images", "weighted_consistency", "weighted_accuracy"],
                       "the published labels/ folder is incomplete")
        return pd.DataFrame({"name": [str(n) for n in df["dist_images"]],
                             "consistency": df["weighted_consistency"].to_numpy(np.float64),
                             "accuracy": df["weighted_accuracy"].to_numpy(np.float64)})
    parts = {}
    for label in ("consistency", "accuracy"):
        path = labels_dir / f"{image_id}_{label}.csv"
        df = _read_csv(path, ["filename", "AP_weighted_avg"], "the published labels/ folder is incomplete")
        parts[label] = pd.DataFrame({"name": [Path(str(n)).name for n in df["filename"]],
                                     label: df["AP_weighted_avg"].to_numpy(np.float64)})
    merged = parts["consistency"].merge(parts["accuracy"], on="name", how="outer", indicator=True)
    lone = merged.loc[merged["_merge"] != "both", "name"].tolist()
    if lone:
        raise InputError(f"{labels_dir}/{image_id}_*.csv: {len(lone)} image(s) have only one of "
                         f"consistency/accuracy, e.g. {lone[0]}")
    return merged.drop(columns="_merge")


class _ImageFolders:
    """Where a source's distorted images are: `images/<id>/` (as the database's README shows it and
    MIQA's det/ins loaders read it) or one flat `images/` folder; names are listed once per folder."""

    def __init__(self, images_dir: Path):
        self.images_dir = images_dir
        self._listed: dict[Path, set[str]] = {}

    def _names(self, folder: Path) -> set[str]:
        if folder not in self._listed:
            self._listed[folder] = set(os.listdir(folder)) if folder.is_dir() else set()
        return self._listed[folder]

    def resolve(self, image_id: str, names: list[str], labels_file: Path) -> list[str]:
        per_source = self.images_dir / image_id
        paths, missing = [], []
        for name in names:
            rel = Path(name)  # a label file may name `<id>/<file>` (relative to images/) or just `<file>`
            for folder in (self.images_dir / rel.parent, per_source, self.images_dir):
                if rel.name in self._names(folder):
                    paths.append(str(folder / rel.name))
                    break
            else:
                missing.append(rel.name)
        if missing:
            raise InputError(f"{len(missing)} of the {len(names)} images {labels_file.name} names are in neither "
                             f"{per_source}/ nor {self.images_dir}/, e.g. {missing[0]}; the download is incomplete "
                             f"or train.published.root is not its root")
        return paths


def published_samples(task: str, root: str, splits_dir: str, composite_lambda: float = 0.5) -> pd.DataFrame:
    """Samples of `task` from the published MIQD-2.5M layout under `root`.

    Only sources named in the split CSVs are read; composite = λ·consistency + (1 − λ)·accuracy.
    Distorted images may sit in per-source folders or in one flat folder; every one must be there.
    """
    images_folder, labels_folder = PUBLISHED_FOLDERS[task]
    images_dir = Path(root) / images_folder / "images"
    labels_dir = Path(root) / labels_folder / "labels"
    src_dir = Path(root) / images_folder / "src_images"
    for d in (images_dir, labels_dir):
        if not d.is_dir():
            raise InputError(f"{d} does not exist; train.published.root must be the MIQD-2.5M root "
                             f"(holding miqa_cls/, miqa_det/, miqa_ins/)")
    split = published_split(task, splits_dir)
    folders = _ImageFolders(images_dir)
    frames = []
    for image_id, which in zip(split["image_id"], split["split"], strict=True):
        labels = published_labels(task, labels_dir, image_id)
        parsed = [layout.parse_distorted_name(image_id, n) for n in labels["name"]]
        label_file = labels_dir / (f"{image_id}_mmos.csv" if task == "cls" else f"{image_id}_accuracy.csv")
        paths = folders.resolve(image_id, list(labels["name"]), label_file)
        srcs = sorted(src_dir.glob(f"{image_id}.*"))
        if not srcs:
            raise InputError(f"{src_dir} has no {image_id}.* (the source image of {label_file.name}); "
                             f"the download is incomplete")
        frames.append(pd.DataFrame({
            "path": paths,
            "image_id": image_id,
            "corruption": [p[0] for p in parsed],
            "roi_level": [p[1] for p in parsed],
            "bg_level": [p[2] for p in parsed],
            "region_type": [layout.region_type(p[1], p[2]) for p in parsed],
            "consistency": labels["consistency"],
            "accuracy": labels["accuracy"],
            "split": which,
            "src_path": str(srcs[0]),
        }))
    df = pd.concat(frames, ignore_index=True)
    df["composite"] = composite_lambda * df["consistency"] + (1.0 - composite_lambda) * df["accuracy"]
    return _finish(df, task)


def samples(config: dict, task: str) -> pd.DataFrame:
    """The sample table of `task` from where the config says training data comes from."""
    t = config["train"]
    if t["source"] == "published":
        pub = t["published"]
        for key in ("root", "splits"):
            if key not in pub:
                raise InputError(f"invalid config: key train.published.{key} is required by train.source published")
        return published_samples(task, pub["root"], pub["splits"], config["label"]["lambda"])
    dataset = layout.TASK_DATASET[task]
    if dataset not in config["sources"]:
        raise InputError(f"task {task} needs sources.{dataset} in the config (or train.source: published)")
    return pipeline_samples(config["outdir"], task, layout.shard_ids(config["sources"][dataset]["shards"]))


# ---------------------------------------------------------------------------------------------
# the Dataset


class QualityDataset:
    """Rows of a sample table as (image crop, region crop, target) uint8/float tensors.

    Items are keyed by (epoch, row): the augmentation of a row in an epoch draws from a stream
    keyed by (seed, epoch, image file name), so it does not depend on worker count, batch order,
    a resume in the middle of an epoch, or where the data lies.
    """

    def __init__(self, table: pd.DataFrame, label: str, preprocess: Preprocess, seed: int = 0):
        if label not in LABELS:
            raise InputError(f"unknown label {label!r}; choose one of {', '.join(LABELS)}")
        self.paths = table["path"].tolist()
        self.names = [Path(p).name for p in self.paths]  # <id>_<corruption>_<levels>.png: unique per task
        self.targets = table[label].to_numpy(np.float32)
        if not np.isfinite(self.targets).all():
            bad = self.paths[int(np.flatnonzero(~np.isfinite(self.targets))[0])]
            raise InputError(f"label {label} is missing (NaN) for {bad}; check the label stage's output")
        self.preprocess = preprocess
        self.seed = seed

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, key) -> dict:
        import torch

        epoch, index = key if isinstance(key, tuple) else (0, key)
        image = read_image(self.paths[index])
        rng = rng_for(self.seed, "augment", epoch, self.names[index]) if self.preprocess.train else None
        crop, region = self.preprocess(image, rng)
        item = {"image": torch.from_numpy(crop), "target": torch.tensor(self.targets[index]),
                "index": torch.tensor(index)}
        if region is not None:
            item["region"] = torch.from_numpy(region)
        return item
