"""Names and paths: the published MIQD-2.5M layout and the workflow's own tables, in one place.

The Snakefile and every stage take their paths from here, so a rule's output and the file the
CLI writes cannot drift apart.

The published MIQD-2.5M layout, with the names its generator writes::

    miqa_cls/images/<id>/<id>_<corruption>_<level>.png                       uniform (UD)
    miqa_cls/images/<id>/<id>_<corruption>_fg_stronger_fg<roi>_bg<bg>.png    ROI-DD (roi > bg)
    miqa_cls/images/<id>/<id>_<corruption>_bg_stronger_fg<roi>_bg<bg>.png    BG-DD (roi < bg)
    miqa_cls/src_images/<id>.<ext>
    miqa_det/...                                                             COCO; shared by det and ins

"fg" is the generator's word for the ROI (foreground), "bg" for the background.
"""

from __future__ import annotations

import re
from pathlib import Path

from miqd.errors import InputError

LEVELS = (1, 2, 3, 4, 5)
PAIRS: tuple[tuple[int, int], ...] = tuple((r, b) for r in LEVELS for b in LEVELS)

DATASETS = ("imagenet", "coco")
DATASET_FOLDER = {"imagenet": "miqa_cls", "coco": "miqa_det"}
TASK_DATASET = {"cls": "imagenet", "det": "coco", "ins": "coco"}
TASK_FOLDER = {"cls": "miqa_cls", "det": "miqa_det", "ins": "miqa_ins"}  # ins labels; its images are miqa_det's


def region_type(roi_level: int, bg_level: int) -> str:
    if roi_level == bg_level:
        return "UD"
    return "ROI-DD" if roi_level > bg_level else "BG-DD"


def distorted_name(image_id: str, corruption: str, roi_level: int, bg_level: int) -> str:
    if roi_level == bg_level:
        return f"{image_id}_{corruption}_{roi_level}.png"
    stronger = "fg" if roi_level > bg_level else "bg"
    return f"{image_id}_{corruption}_{stronger}_stronger_fg{roi_level}_bg{bg_level}.png"


_NAME = re.compile(
    r"^(?P<corruption>[A-Za-z][A-Za-z_]*?)_(?:(?P<level>[1-5])|(?P<stronger>fg|bg)_stronger_fg(?P<roi>[1-5])_bg(?P<bg>[1-5]))\.png$"
)


def parse_distorted_name(image_id: str, name: str) -> tuple[str, int, int]:
    """(corruption, roi_level, bg_level) of a distorted image's file name; `distorted_name` inverted.

    The id is given (it is the folder's name) because ids may contain `_`. A mixed name whose
    `fg_stronger` / `bg_stronger` contradicts its levels is an error, not a guess.
    """
    base = Path(name).name
    if not base.startswith(image_id + "_"):
        raise InputError(f"distorted image name {base!r} does not start with its source id {image_id!r}_")
    m = _NAME.match(base[len(image_id) + 1:])
    if not m:
        raise InputError(
            f"distorted image name {base!r} is neither <id>_<corruption>_<level>.png nor "
            f"<id>_<corruption>_{{fg,bg}}_stronger_fg<roi>_bg<bg>.png (levels 1-5)"
        )
    if m["level"]:
        level = int(m["level"])
        return m["corruption"], level, level
    roi, bg = int(m["roi"]), int(m["bg"])
    if roi == bg or (m["stronger"] == "fg") != (roi > bg):
        raise InputError(f"distorted image name {base!r}: {m['stronger']}_stronger does not fit "
                         f"ROI level {roi} and background level {bg}")
    return m["corruption"], roi, bg


def distorted_relpath(dataset: str, image_id: str, corruption: str, roi: int, bg: int) -> str:
    """Path of a distorted image relative to the output root (`outdir`)."""
    name = distorted_name(image_id, corruption, roi, bg)
    return f"{DATASET_FOLDER[dataset]}/images/{image_id}/{name}"


def source_copy_relpath(dataset: str, image_id: str, suffix: str) -> str:
    return f"{DATASET_FOLDER[dataset]}/src_images/{image_id}{suffix}"


def source_alias_relpath(dataset: str, image_id: str, suffix: str) -> str | None:
    """MIQA's det/ins loaders look for `src_images/<id>.jpg`: for another suffix, a link by that name."""
    if dataset != "coco" or suffix.lower() == ".jpg":
        return None
    return f"{DATASET_FOLDER[dataset]}/src_images/{image_id}.jpg"


def additional_info(outdir: str) -> str:
    """The COCO annotations where MIQA's det/ins loaders look for them."""
    return str(Path(outdir) / DATASET_FOLDER["coco"] / "additional_info" / "instances_val2017.json")


def shard_ids(n_shards: int) -> list[str]:
    width = max(3, len(str(n_shards - 1)))
    return [f"{k:0{width}d}" for k in range(n_shards)]


def select_table(outdir: str, dataset: str, shard: str) -> str:
    return str(Path(outdir) / "select" / dataset / f"shard-{shard}.parquet")


def roi_table(outdir: str, dataset: str, shard: str) -> str:
    return str(Path(outdir) / "roi" / dataset / f"shard-{shard}.parquet")


def roi_mask(outdir: str, dataset: str, image_id: str) -> str:
    return str(Path(outdir) / "roi" / dataset / "masks" / f"{image_id}.png")


def distort_manifest(outdir: str, dataset: str, shard: str) -> str:
    return str(Path(outdir) / "distort" / dataset / f"shard-{shard}.parquet")


def distort_seal(outdir: str, dataset: str, shard: str) -> str:
    """Every file the shard's distort job wrote, with its size (its PNGs are not rule outputs)."""
    return str(Path(outdir) / "distort" / dataset / f"shard-{shard}.files.tsv")


def distort_levels(outdir: str, dataset: str, shard: str) -> str:
    return str(Path(outdir) / "distort" / dataset / f"shard-{shard}.levels.parquet")


def distort_manifest_merged(outdir: str, dataset: str) -> str:
    return str(Path(outdir) / "distort" / f"{dataset}.parquet")


def distort_figures(outdir: str, dataset: str) -> dict[str, str]:
    base = Path(outdir) / "distort" / dataset
    return {"quality": f"{base}.quality.png", "examples": f"{base}.examples.png"}


def predictions(outdir: str, task: str, model: str, shard: str) -> str:
    """Predictions of one model on one shard's images (originals and distortions)."""
    return str(Path(outdir) / "infer" / task / model / f"shard-{shard}.parquet")


def infer_index(outdir: str, task: str, group: str, shard: str) -> str:
    """The infer job's output: which prediction files the group wrote for the shard."""
    return str(Path(outdir) / "infer" / task / "groups" / group / f"shard-{shard}.parquet")


def label_table(outdir: str, task: str, shard: str) -> str:
    """Per-model scores and the three MMOS columns of one shard's distorted images."""
    return str(Path(outdir) / "label" / task / f"shard-{shard}.parquet")


def label_export_dir(outdir: str, task: str) -> str:
    """The labels in the published layout (`<id>_mmos.csv`, `<id>_{accuracy,consistency}.csv`)."""
    return str(Path(outdir) / TASK_FOLDER[task] / "labels")


def validate_trials(outdir: str, task: str) -> str:
    return str(Path(outdir) / "validate" / f"{task}.trials.parquet")


def validation_table(outdir: str) -> dict[str, str]:
    """Paper Table 4 as CSV and Markdown, and the per-trial distributions as a plot."""
    base = Path(outdir) / "validate" / "table4"
    return {"csv": f"{base}.csv", "md": f"{base}.md", "plot": f"{base}.png"}


def split_table(outdir: str, dataset: str) -> str:
    """Which source images are train and which val (det and ins share the coco split)."""
    return str(Path(outdir) / "split" / f"{dataset}.parquet")


def split_balance(outdir: str, dataset: str) -> str:
    return str(Path(outdir) / "split" / f"{dataset}.balance.csv")


def split_upstream(outdir: str, dataset: str) -> dict[str, str]:
    """The split in the upstream CSV formats (MIQA's data/dataset_splitting/)."""
    stem = "miqa_cls" if dataset == "imagenet" else "miqa_det"
    return {s: str(Path(outdir) / "split" / f"{stem}_{s}.csv") for s in ("train", "val")}


def compare_outputs(outdir: str) -> dict[str, str]:
    """Our labels beside the published MIQD-2.5M's (`miqd compare-labels`)."""
    base = Path(outdir) / "compare"
    return {"csv": str(base / "labels.csv"), "md": str(base / "labels.md"), "png": str(base / "labels.png")}


def outdir_of_compare(csv_path: str) -> str:
    """`compare_outputs` inverted: the outdir whose label tables a comparison reads."""
    return str(Path(csv_path).parents[1])


def report_html(outdir: str) -> str:
    return str(Path(outdir) / "report" / "index.html")


def train_dir(outdir: str, run: str) -> str:
    """Checkpoints, metrics log and plot of one training run."""
    return str(Path(outdir) / "train" / run)


def evaluate_dir(outdir: str, run: str) -> str:
    return str(Path(outdir) / "evaluate" / run)


def log_path(outdir: str, stage: str, name: str) -> str:
    return str(Path(outdir) / "logs" / stage / f"{name}.log")


def benchmark_path(outdir: str, rule: str, name: str) -> str:
    """Snakemake's measurement of one job (wall time, peak memory); `miqd resources` reads them."""
    return str(Path(outdir) / "logs" / "benchmarks" / rule / f"{name}.tsv")


def benchmark_files(outdir: str) -> list[Path]:
    return sorted((Path(outdir) / "logs" / "benchmarks").glob("*/*.tsv"))
